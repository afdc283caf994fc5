/*!
A one-line progress display for long transfers on a terminal: bytes so far, rate and elapsed
time, redrawn twice a second from counters the pipeline stages bump. Nothing is printed when
stderr is not a terminal (logs and CI stay clean).
*/

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::units;

/// Counters a stage can share with the display.
#[derive(Clone, Default)]
pub struct Counters {
    /// Bytes read from the source (the dump, or the download).
    pub input: Arc<AtomicU64>,
    /// Bytes written to the destination (stored, or restored).
    pub output: Arc<AtomicU64>,
}

pub struct Progress {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Progress {
    /// Starts the display when stderr is a terminal and `enabled`; otherwise does nothing.
    pub fn start(label: &'static str, counters: &Counters, enabled: bool) -> Progress {
        let stop = Arc::new(AtomicBool::new(false));
        if !enabled || !std::io::stderr().is_terminal() {
            return Progress { stop, handle: None };
        }
        let (input, output, s) = (
            counters.input.clone(),
            counters.output.clone(),
            stop.clone(),
        );
        let handle = std::thread::Builder::new()
            .name("progress".into())
            .spawn(move || {
                let start = Instant::now();
                while !s.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(500));
                    let el = start.elapsed();
                    let i = input.load(Ordering::Relaxed);
                    let o = output.load(Ordering::Relaxed);
                    let rate = i as f64 / el.as_secs_f64().max(0.001);
                    let mut err = std::io::stderr().lock();
                    let _ = write!(
                        err,
                        "\r\x1b[2K{label}: {} read, {} written, {}/s, {}",
                        units::bytes(i),
                        units::bytes(o),
                        units::bytes(rate as u64),
                        units::duration(el)
                    );
                    let _ = err.flush();
                }
                let _ = write!(std::io::stderr(), "\r\x1b[2K");
            })
            .ok();
        Progress { stop, handle }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
