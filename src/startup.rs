//! What the command line does first, before any thread exists: make every file
//! it creates private (umask 077), and take the secrets out of the environment.
//!
//! The secret variables ([`SECRET_VARS`]: the master passphrase, the operator
//! token, the new passphrase of `key change-passphrase`) are read once into
//! zeroizing buffers ([`EnvSecrets`]) and leave the environment, so that no copy
//! of `std::env::vars()` and no child process can hold them.
//!
//! Removing a variable (`std::env::remove_var`) is not enough on its own: it
//! only drops the entry from libc's `environ` array, while the kernel keeps the
//! process's initial environment block, which `/proc/<pid>/environ` shows to the
//! same user and to root for the whole run (and which a core dump holds). So
//! when a secret variable is set, the process writes the secrets into a pipe and
//! executes itself again (`/proc/self/exe`: same pid, same arguments, same
//! standard streams) with an environment without them; the new image reads them
//! from the pipe, whose descriptor it is given in [`ENV_HANDOFF`]. Without a
//! secret in the environment nothing is re-executed. If the re-execution cannot
//! happen (no `/proc`), the variables are still removed, with a warning that
//! the initial block keeps them.
//!
//! The pipe's read end stays open in the new image, drained (closing a
//! descriptor by number is `unsafe`, which this crate forbids); nothing is read
//! from it again.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::process::CommandExt;

use zeroize::{Zeroize, Zeroizing};

use crate::config::{EnvSecrets, SECRET_VARS};

/// Set by the process for its re-executed self: the descriptor of the pipe
/// that holds the secrets. Internal; removed from the environment when read.
pub const ENV_HANDOFF: &str = "OIDCVAULT_INTERNAL_SECRETS_FD";

/// Longest value of a secret variable (the three together stay well below the
/// 64 KiB a pipe holds before its reader runs).
pub const MAX_SECRET_BYTES: usize = 8 * 1024;

/// Files and folders this process creates are its user's only.
pub fn private_umask() {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
}

/// Take the secret variables out of the environment (see the module doc). Call
/// it first thing, while the process has one thread: it may re-execute the
/// process and does not return then. `Err` is one line for the operator.
pub fn take_secrets() -> Result<EnvSecrets, String> {
    if let Some(fd) = std::env::var_os(ENV_HANDOFF) {
        std::env::remove_var(ENV_HANDOFF);
        for name in SECRET_VARS {
            std::env::remove_var(name);
        }
        return read_handoff(&fd);
    }
    // Room for every value up front: a growing buffer would leave copies behind.
    let mut payload = Zeroizing::new(Vec::with_capacity(handoff_limit()));
    let mut secrets = EnvSecrets::default();
    for name in SECRET_VARS {
        let Some(value) = std::env::var_os(name) else {
            continue;
        };
        let value = secret_string(name, value.into_vec())?;
        payload.extend_from_slice(name.as_bytes());
        payload.push(b'=');
        payload.extend_from_slice(value.as_bytes());
        payload.push(0);
        secrets.set(name, value);
    }
    if payload.is_empty() {
        return Ok(secrets);
    }
    let error = reexec(&payload);
    for name in SECRET_VARS {
        std::env::remove_var(name);
    }
    eprintln!(
        "oidcvault: warning: cannot re-execute without the secret variables ({error}); they are \
         out of the environment, but /proc/{}/environ still shows them",
        std::process::id()
    );
    Ok(secrets)
}

/// A secret variable's value, checked (length, UTF-8) and kept in a zeroizing
/// buffer; a refused value is wiped too.
fn secret_string(name: &str, mut bytes: Vec<u8>) -> Result<Zeroizing<String>, String> {
    if bytes.len() > MAX_SECRET_BYTES {
        bytes.zeroize();
        return Err(format!(
            "{name} is longer than {MAX_SECRET_BYTES} bytes; nothing was done"
        ));
    }
    match String::from_utf8(bytes) {
        Ok(text) => Ok(Zeroizing::new(text)),
        Err(e) => {
            e.into_bytes().zeroize();
            Err(format!("{name} is not valid UTF-8; nothing was done"))
        }
    }
}

/// Execute this program again with the secrets in a pipe and out of the
/// environment. Returns only on failure.
fn reexec(payload: &[u8]) -> std::io::Error {
    let attempt = || -> std::io::Result<std::io::Error> {
        let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        let mut writer = std::fs::File::from(write);
        writer.write_all(payload)?;
        drop(writer);
        // The read end, and only it, survives the exec.
        rustix::io::fcntl_setfd(&read, rustix::io::FdFlags::empty())?;
        let mut args = std::env::args_os();
        let mut command = std::process::Command::new("/proc/self/exe");
        if let Some(arg0) = args.next() {
            command.arg0(arg0);
        }
        command.args(args);
        for name in SECRET_VARS {
            command.env_remove(name);
        }
        command.env(ENV_HANDOFF, read.as_raw_fd().to_string());
        let error = command.exec();
        drop(read);
        Ok(error)
    };
    attempt().unwrap_or_else(|e| e)
}

/// Read the secrets a previous image of this process left in the pipe `fd`.
fn read_handoff(fd: &OsString) -> Result<EnvSecrets, String> {
    let fail = |why: &str| format!("cannot read the secrets handed over in {ENV_HANDOFF}: {why}");
    let fd = fd
        .to_str()
        .and_then(|s| s.parse::<u32>().ok())
        .ok_or_else(|| fail("not a descriptor number"))?;
    let limit = handoff_limit() as u64;
    let mut payload = Zeroizing::new(Vec::with_capacity(handoff_limit() + 1));
    std::fs::File::open(format!("/proc/self/fd/{fd}"))
        .and_then(|f| f.take(limit + 1).read_to_end(&mut payload))
        .map_err(|e| fail(&e.to_string()))?;
    if payload.len() as u64 > limit {
        return Err(fail("too long"));
    }
    parse_handoff(&payload).ok_or_else(|| fail("malformed"))
}

/// The longest handoff: every secret variable at its longest, with its name.
fn handoff_limit() -> usize {
    SECRET_VARS.len() * (MAX_SECRET_BYTES + 64)
}

/// `NAME=value\0` entries, each name one of [`SECRET_VARS`].
fn parse_handoff(payload: &[u8]) -> Option<EnvSecrets> {
    let mut secrets = EnvSecrets::default();
    for entry in payload.split(|b| *b == 0).filter(|e| !e.is_empty()) {
        let eq = entry.iter().position(|b| *b == b'=')?;
        let name = std::str::from_utf8(entry.get(..eq)?).ok()?;
        let value = secret_string(name, entry.get(eq + 1..)?.to_vec()).ok()?;
        if !secrets.set(name, value) {
            return None;
        }
    }
    Some(secrets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_handoff_carries_exactly_the_secret_variables() {
        let s =
            parse_handoff(b"OIDCVAULT_MASTER_PASSPHRASE=a b=c\0OIDCVAULT_TOKEN=ovt_1_x\0").unwrap();
        assert_eq!(
            s.master_passphrase.as_deref().map(String::as_str),
            Some("a b=c")
        );
        assert_eq!(s.token.as_deref().map(String::as_str), Some("ovt_1_x"));
        assert!(s.new_master_passphrase.is_none());
        assert!(parse_handoff(b"").is_some());
        assert!(parse_handoff(b"OIDCVAULT_SERVER__BIND=0.0.0.0:80\0").is_none());
        assert!(parse_handoff(b"no equals sign\0").is_none());
        assert!(parse_handoff(b"OIDCVAULT_TOKEN=\xff\0").is_none());
        let debug = format!("{s:?}");
        assert!(
            !debug.contains("a b=c") && !debug.contains("ovt_1_x"),
            "{debug}"
        );
    }

    #[test]
    fn over_long_values_are_refused_by_name() {
        let e = secret_string("OIDCVAULT_TOKEN", vec![b'x'; MAX_SECRET_BYTES + 1]).unwrap_err();
        assert!(e.contains("OIDCVAULT_TOKEN"), "{e}");
        assert!(secret_string("OIDCVAULT_TOKEN", vec![b'x'; MAX_SECRET_BYTES]).is_ok());
    }
}
