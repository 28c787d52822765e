import os
import sys

MODELS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO_ROOT = os.path.dirname(MODELS_DIR)
sys.path.insert(0, MODELS_DIR)
