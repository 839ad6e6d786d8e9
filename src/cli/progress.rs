//! How the offline commands show progress on stderr (stdout stays what scripts
//! parse): with stderr a terminal, an `indicatif` bar per phase (a spinner when
//! the total is unknown), left on screen with what the phase did; otherwise
//! one plain line per finished phase, `<command>: <what it did>`, e.g.
//! `verify: audit chain checked (1234 events)`.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::progress::Progress;

/// The command line's [`Progress`].
pub(super) struct PhaseReporter {
    command: &'static str,
    out: Output,
}

enum Output {
    /// The bar of the current phase.
    Terminal(Mutex<Option<ProgressBar>>),
    Lines(Mutex<Box<dyn Write + Send>>),
}

impl PhaseReporter {
    /// Bars when stderr is a terminal, else lines on stderr.
    pub(super) fn stderr(command: &'static str) -> Self {
        if std::io::stderr().is_terminal() {
            Self {
                command,
                out: Output::Terminal(Mutex::new(None)),
            }
        } else {
            Self::lines(command, Box::new(std::io::stderr()))
        }
    }

    /// One line per finished phase, to `out`.
    pub(super) fn lines(command: &'static str, out: Box<dyn Write + Send>) -> Self {
        Self {
            command,
            out: Output::Lines(Mutex::new(out)),
        }
    }
}

impl Progress for PhaseReporter {
    fn start(&self, what: &str, total: Option<u64>) {
        let Output::Terminal(bar) = &self.out else {
            return;
        };
        let (pb, template) = match total {
            Some(_) => (
                ProgressBar::hidden(),
                "{prefix}: {msg} [{wide_bar}] {pos}/{len} ({elapsed})",
            ),
            None => (
                ProgressBar::hidden(),
                "{prefix}: {spinner} {msg} {pos} ({elapsed})",
            ),
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            pb.set_style(style);
        }
        // Drawn only once styled and named (a fresh bar draws at once).
        if let Some(n) = total {
            pb.set_length(n);
        }
        pb.set_prefix(self.command);
        pb.set_message(what.to_owned());
        pb.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        pb.enable_steady_tick(Duration::from_millis(100));
        if let Some(old) = bar.lock().unwrap_or_else(|e| e.into_inner()).replace(pb) {
            old.finish_and_clear();
        }
    }

    fn advance(&self, n: u64) {
        if let Output::Terminal(bar) = &self.out {
            if let Some(pb) = bar.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
                pb.inc(n);
            }
        }
    }

    fn finish(&self, done: &str) {
        match &self.out {
            Output::Terminal(bar) => {
                if let Some(pb) = bar.lock().unwrap_or_else(|e| e.into_inner()).take() {
                    if let Ok(style) = ProgressStyle::with_template("{prefix}: {msg} ({elapsed})") {
                        pb.set_style(style);
                    }
                    pb.finish_with_message(done.to_owned());
                }
            }
            Output::Lines(out) => {
                let mut out = out.lock().unwrap_or_else(|e| e.into_inner());
                // Progress is a courtesy: a closed stderr does not fail the command.
                let _ = writeln!(out, "{}: {done}", self.command);
                let _ = out.flush();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_name_the_command_and_each_finished_phase() {
        let out = Shared::default();
        let r = PhaseReporter::lines("verify", Box::new(out.clone()));
        r.start("checking configs", None);
        r.advance(1);
        r.advance(2);
        r.finish("configs checked (3)");
        r.start("checking the audit chain", Some(10));
        r.finish("audit chain checked (10 events)");
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert_eq!(
            text,
            "verify: configs checked (3)\nverify: audit chain checked (10 events)\n"
        );
    }

    #[test]
    fn a_terminal_bar_per_phase_is_replaced_and_finished() {
        let r = PhaseReporter {
            command: "backup",
            out: Output::Terminal(Mutex::new(None)),
        };
        r.start("copying records", Some(3));
        r.advance(2);
        let Output::Terminal(bar) = &r.out else {
            unreachable!()
        };
        let pos = bar
            .lock()
            .unwrap()
            .as_ref()
            .map(|b| (b.position(), b.length()));
        assert_eq!(pos, Some((2, Some(3))));
        r.finish("records copied (3)");
        assert!(bar.lock().unwrap().is_none());
    }
}
