"""python -m uigc_models <step> [args]: prepare | train | reduce | average | spot-check | export | taming-import | evaluate | lpips | onnx-import | artefacts | grid-probe | gpu-pack | fast-decoder | decoder-cost | dense | smooth-decoder | token-refine."""
import sys

STEPS = {
    "prepare": ("uigc_models.data", ["prepare"]),
    "train": ("uigc_models.train", []),
    "reduce": ("uigc_models.reduce_codebook", []),
    "average": ("uigc_models.average", []),
    "spot-check": ("uigc_models.spot_check", []),
    "export": ("uigc_models.export", []),
    "taming-import": ("uigc_models.taming_import", []),
    "evaluate": ("uigc_models.evaluate", []),
    "lpips": ("uigc_models.lpips", []),
    "onnx-import": ("uigc_models.onnx_import", []),
    "artefacts": ("uigc_models.artefacts", []),
    "grid-probe": ("uigc_models.grid_probe", []),
    "gpu-pack": ("uigc_models.gpu_pack", []),
    "fast-decoder": ("uigc_models.fast_decoder", []),
    "decoder-cost": ("uigc_models.decoder_cost", []),
    "dense": ("uigc_models.dense", []),
    "smooth-decoder": ("uigc_models.smooth_decoder", []),
    "token-refine": ("uigc_models.token_refine", []),
}


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in STEPS:
        print(__doc__)
        return 2
    import importlib
    mod, pre = STEPS[sys.argv[1]]
    return importlib.import_module(mod).main(pre + sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
