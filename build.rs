//! Names the commit the binary was built from, for `oidcvault --version`.
//!
//! `OIDCVAULT_COMMIT` in the build environment wins (a packager building from a
//! tarball sets it); else `git` is asked for the short hash of HEAD, with
//! `-dirty` when tracked files differ from it; else (no git, no repository, as
//! from a crates tarball) the commit is `unknown`. Reruns only when HEAD, the
//! branch it points to, or the index move (a commit, a checkout, `git add`), so
//! an ordinary rebuild does not run git: `-dirty` tells the state of the tree
//! at the last of those moves.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    Some(text.trim().to_owned())
}

fn main() {
    println!("cargo:rerun-if-env-changed=OIDCVAULT_COMMIT");
    println!("cargo:rerun-if-changed=build.rs");
    let commit = match std::env::var("OIDCVAULT_COMMIT") {
        Ok(c) if !c.trim().is_empty() => c.trim().to_owned(),
        _ => from_git().unwrap_or_else(|| "unknown".to_owned()),
    };
    println!("cargo:rustc-env=OIDCVAULT_BUILD_COMMIT={commit}");
}

fn from_git() -> Option<String> {
    // Paths through git itself: in a worktree `.git` is a file, refs live in
    // the common directory.
    let mut watched = vec![
        "HEAD".to_owned(),
        "index".to_owned(),
        "packed-refs".to_owned(),
    ];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.push(branch);
    }
    for name in &watched {
        // A path that does not exist would make every build rerun this script.
        if let Some(path) = git(&["rev-parse", "--git-path", name]) {
            if std::path::Path::new(&path).exists() {
                println!("cargo:rerun-if-changed={path}");
            }
        }
    }
    let hash = git(&["rev-parse", "--short=12", "HEAD"])?;
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    Some(if dirty { format!("{hash}-dirty") } else { hash })
}
