//! `oidcvault man` and `oidcvault completions SHELL`: the man page (roff) and the
//! shell completion scripts, generated from the clap definition itself so they
//! cannot drift from the commands the binary takes. The .deb installs what
//! these print (scripts/package.sh); neither reads the configuration.

use std::io::Write;

use clap::CommandFactory;

use super::{Cli, CliError};

/// The shells `oidcvault completions` writes a script for.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(super) enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// The man page's sections beyond what clap knows: files, environment, and
/// where each command's own help is.
const EXTRA_SECTIONS: &str = r#".SH FILES
.TP
.I /etc/oidcvault/config.toml
The configuration installed by the package (without
.BR --config ,
.I ./config.toml
is read). Relative paths in it are resolved against its folder.
.TP
.I /etc/oidcvault/master.key
The master key (mode 0600). The packaged unit hands it to the service as the
systemd credential
.I master.key
(LoadCredential=). Back it up apart from the data: without it no stored
secret can be read.
.TP
.I /var/lib/oidcvault/data
The data directory of the packaged configuration.
.TP
.I /var/backups/oidcvault
Where online backups are written.
.SH ENVIRONMENT
.TP
.B OIDCVAULT_MASTER_PASSPHRASE
The master passphrase (at least 12 characters), used instead of the key file.
.TP
.B OIDCVAULT_MASTER_PASSPHRASE_FILE
A file (mode 0600) holding the master passphrase.
.TP
.B CREDENTIALS_DIRECTORY
Set by systemd (LoadCredential=, LoadCredentialEncrypted=): the master key is
read from the credential named like the last part of
.I security.master_key_file
in this folder, never created there.
.TP
.B OIDCVAULT_TOKEN
The operator token for commands that go through a running server
.RB ( backup ).
.TP
.B OIDCVAULT_NEW_MASTER_PASSPHRASE
The new passphrase of
.BR "key change-passphrase" .
.TP
.B OIDCVAULT_LOG
A tracing filter that overrides
.IR log.level .
.TP
.B OIDCVAULT_\fISECTION\fB__\fIKEY\fR
Overrides one configuration key, e.g.
.BR OIDCVAULT_SERVER__BIND=0.0.0.0:8080 .
.SH EXIT STATUS
0 on success; 1 on a failure, said in one line on standard error; 2 on a
command line that does not parse.
"#;

/// The man page as roff: clap_mangen's sections, with every command (nested
/// ones included) described on this one page instead of clap_mangen's list of
/// per-command pages, which the package does not install.
pub(super) fn man(out: &mut dyn Write) -> Result<(), CliError> {
    let cmd = Cli::command();
    let page = clap_mangen::Man::new(cmd.clone()).manual("oidcvault manual");
    page.render_title(out)?;
    page.render_name_section(out)?;
    page.render_synopsis_section(out)?;
    page.render_description_section(out)?;
    page.render_options_section(out)?;
    let mut commands = String::from(
        ".SH COMMANDS\nWithout a command,\n.B oidcvault\nserves the HTTP API. \
         Each command also has its own\n.BR --help .\n",
    );
    for sub in cmd.get_subcommands() {
        describe(sub, "oidcvault", &mut commands);
    }
    out.write_all(commands.as_bytes())?;
    out.write_all(EXTRA_SECTIONS.as_bytes())?;
    page.render_version_section(out)?;
    Ok(())
}

/// `cmd` (under `parent`) as a tagged paragraph: its words and arguments, what
/// it does, its options; then its own subcommands.
fn describe(cmd: &clap::Command, parent: &str, out: &mut String) {
    let name = format!("{parent} {}", cmd.get_name());
    if cmd.get_name() == "help" {
        return;
    }
    if cmd.has_subcommands() {
        for sub in cmd.get_subcommands() {
            describe(sub, &name, out);
        }
        return;
    }
    let mut usage = format!("\\fB{}\\fR", roff(&name));
    for arg in cmd.get_positionals() {
        let value = arg
            .get_value_names()
            .and_then(|v| v.first())
            .map_or_else(|| arg.get_id().as_str().to_uppercase(), |v| v.to_string());
        usage.push_str(&format!(" \\fI{}\\fR", roff(&value)));
    }
    out.push_str(&format!(".TP\n{usage}\n"));
    if let Some(about) = cmd.get_long_about().or(cmd.get_about()) {
        out.push_str(&format!("{}\n", roff(&about.to_string())));
    }
    for arg in cmd.get_arguments().filter(|a| a.get_long().is_some()) {
        if arg.get_long() == Some("help") || arg.get_long() == Some("config") {
            continue;
        }
        let long = arg.get_long().unwrap_or_default();
        let takes_value = arg.get_action().takes_values();
        let value = match arg.get_value_names().and_then(|v| v.first()) {
            Some(v) if takes_value => format!(" \\fI{}\\fR", roff(v)),
            _ => String::new(),
        };
        let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
        out.push_str(&format!(
            ".br\n\\fB\\-\\-{}\\fR{value}: {}\n",
            roff(long),
            roff(&help)
        ));
    }
}

/// Text safe in roff: backslashes and hyphens escaped, no line starting a request.
fn roff(text: &str) -> String {
    let escaped = text.replace('\\', "\\e").replace('-', "\\-");
    escaped
        .lines()
        .map(|l| {
            if l.starts_with('.') || l.starts_with('\'') {
                format!("\\&{l}")
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The completion script for `shell`.
pub(super) fn completions(shell: Shell, out: &mut dyn Write) -> Result<(), CliError> {
    let mut cmd = Cli::command();
    let generator = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    clap_complete::generate(generator, &mut cmd, "oidcvault", out);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut buf = Vec::new();
        f(&mut buf);
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn the_man_page_names_every_command_and_the_credential() {
        let page = text(|b| man(b).unwrap());
        assert!(
            page.starts_with(".ie") || page.contains(".TH oidcvault 1"),
            "{page}"
        );
        for cmd in [
            "oidcvault serve",
            "oidcvault domain add",
            "oidcvault token create",
            "oidcvault app",
            "oidcvault backup",
            "oidcvault key change\\-passphrase",
            "oidcvault verify",
            "oidcvault completions",
        ] {
            assert!(page.contains(cmd), "the man page lacks {cmd}:\n{page}");
        }
        assert!(!page.contains("oidcvault-serve(1)"), "{page}");
        assert!(page.contains("CREDENTIALS_DIRECTORY"));
        // roff requests start a line; a stray leading ' or . in prose would be one.
        for line in EXTRA_SECTIONS.lines() {
            assert!(!line.starts_with('\''), "{line}");
        }
    }

    #[test]
    fn each_shell_gets_a_script_that_names_the_subcommands() {
        for (shell, marker) in [
            (Shell::Bash, "complete -F"),
            (Shell::Zsh, "#compdef oidcvault"),
            (Shell::Fish, "complete -c oidcvault"),
        ] {
            let script = text(|b| completions(shell, b).unwrap());
            assert!(script.contains(marker), "{shell:?}: {script}");
            assert!(script.contains("change-passphrase"), "{shell:?}");
        }
    }
}
