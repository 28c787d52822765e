//! A tokenizer encoder on a thread of its own, for a sender that pipelines: while the prior
//! codes frame N on the calling thread, the encoder network runs on frame N+1 (docs/edge.md
//! "Pipelining"). On a 2-core CPU the two halves of a frame's work then overlap instead of
//! adding up, at the price of one frame of latency. Packets are the same as without it: the
//! same network makes the same tokens, only on another thread.

use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::bundle::Bundle;
use super::error::{Error, Result};
use super::frame::RgbImage;
use super::prior::TokenGrid;
use super::runtime::{Role, RuntimeOptions};
use super::tokenizer::Tokenizer;

/// A frame back from the tokenizer thread: its pixels, its tokens (or the network's error) and
/// the time the network took.
pub struct Tokenized {
    pub image: RgbImage,
    pub tokens: Result<TokenGrid>,
    pub network: Duration,
}

/// Frames in, token grids out, in order, on a thread that owns its own encoder session.
pub struct TokenizerThread {
    jobs: Option<mpsc::Sender<RgbImage>>,
    results: mpsc::Receiver<Tokenized>,
    handle: Option<JoinHandle<()>>,
    in_flight: usize,
}

impl TokenizerThread {
    /// Opens the bundle's encoder (the one `opts.encoder` names) with `opts` on the calling
    /// thread, so a missing runtime, provider or file is reported here, then moves it to a
    /// new thread.
    pub fn spawn(bundle: &Bundle, opts: &RuntimeOptions) -> Result<Self> {
        let opts = RuntimeOptions {
            role: Role::Encoder,
            ..opts.clone()
        };
        let mut tokenizer = Tokenizer::load(bundle, &opts)?;
        let (jobs, job_rx) = mpsc::channel::<RgbImage>();
        let (result_tx, results) = mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("uigc-tokenizer".into())
            .spawn(move || {
                for image in job_rx {
                    let t = Instant::now();
                    let tokens = tokenizer.encode(&image);
                    let done = Tokenized {
                        image,
                        tokens,
                        network: t.elapsed(),
                    };
                    if result_tx.send(done).is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| {
                Error::InvalidArgument(format!("cannot start the tokenizer thread: {e}"))
            })?;
        Ok(Self {
            jobs: Some(jobs),
            results,
            handle: Some(handle),
            in_flight: 0,
        })
    }

    /// Frames submitted and not yet received.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Queues a frame; it returns, tokenized, from [`Self::receive`] after those before it.
    pub fn submit(&mut self, image: RgbImage) -> Result<()> {
        self.jobs
            .as_ref()
            .and_then(|j| j.send(image).ok())
            .ok_or_else(Self::gone)?;
        self.in_flight += 1;
        Ok(())
    }

    /// The oldest submitted frame, waiting for its network to finish; `None` when nothing is
    /// in flight.
    pub fn receive(&mut self) -> Result<Option<Tokenized>> {
        if self.in_flight == 0 {
            return Ok(None);
        }
        let done = self.results.recv().map_err(|_| Self::gone())?;
        self.in_flight -= 1;
        Ok(Some(done))
    }

    fn gone() -> Error {
        Error::InvalidArgument("the tokenizer thread has stopped".into())
    }
}

impl Drop for TokenizerThread {
    fn drop(&mut self) {
        // Closing the job channel ends the thread's loop after the frame it is on.
        self.jobs = None;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
