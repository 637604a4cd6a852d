//! The configuration reference: every subcommand of `stockflow` with each setting's flag,
//! environment variable, default and help, rendered from the command line's own
//! definition (`stockflow reference > docs/reference/cli.md`, checked for drift like the
//! CRDs), so the documentation cannot say what the binary does not do.

use std::fmt::Write;

use clap::{Arg, Command, CommandFactory};

use super::Cli;

/// The reference as Markdown.
pub fn markdown() -> String {
    let cli = Cli::command();
    let mut out = String::from(
        "# `stockflow` command-line and environment reference\n\n\
         Generated from the binary's own definitions by `stockflow reference` \
         (`scripts/generate.sh` writes this file; CI fails when it is out of date). \
         Every setting can be given as a flag or as its environment variable; the \
         operator's pods receive them as environment variables from the region's \
         ConfigMap and Secrets.\n\n",
    );
    let _ = writeln!(
        out,
        "## Every subcommand\n\n{}\n",
        settings_table(cli.get_arguments())
    );
    for sub in cli.get_subcommands().filter(|s| !s.is_hide_set()) {
        section(&mut out, sub);
    }
    out
}

fn section(out: &mut String, command: &Command) {
    let _ = writeln!(out, "## `stockflow {}`\n", command.get_name());
    if let Some(about) = command.get_long_about().or_else(|| command.get_about()) {
        let _ = writeln!(out, "{}\n", about.to_string().trim());
    }
    let args: Vec<&Arg> = command
        .get_arguments()
        .filter(|a| !a.is_hide_set() && a.get_id() != "help" && a.get_id() != "log_json")
        .collect();
    if args.is_empty() {
        out.push_str("No settings.\n\n");
    } else {
        let _ = writeln!(out, "{}\n", settings_table(args.into_iter()));
    }
}

fn settings_table<'a>(args: impl Iterator<Item = &'a Arg>) -> String {
    let mut table = String::from(
        "| flag | environment | default | what it does |\n| --- | --- | --- | --- |\n",
    );
    for arg in args.filter(|a| !a.is_hide_set() && a.get_id() != "help") {
        let flag = match (arg.get_long(), arg.is_positional()) {
            (Some(long), _) => format!("`--{long}`"),
            (None, true) => format!("`<{}>`", arg.get_id()),
            (None, false) => String::new(),
        };
        let env = arg
            .get_env()
            .map(|e| format!("`{}`", e.to_string_lossy()))
            .unwrap_or_default();
        let default = arg
            .get_default_values()
            .iter()
            .map(|v| format!("`{}`", v.to_string_lossy()))
            .collect::<Vec<_>>()
            .join(", ");
        let help = arg
            .get_long_help()
            .or_else(|| arg.get_help())
            .map(|h| h.to_string().replace('\n', " ").replace('|', "\\|"))
            .unwrap_or_default();
        let _ = writeln!(table, "| {flag} | {env} | {default} | {help} |");
    }
    table.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_subcommand_and_setting_is_in_the_reference() {
        let text = markdown();
        for sub in Cli::command()
            .get_subcommands()
            .filter(|s| !s.is_hide_set())
        {
            assert!(text.contains(&format!("## `stockflow {}`", sub.get_name())));
        }
        assert!(text.contains("`STOCKFLOW_MTLS_PRINCIPALS`"));
        assert!(text.contains("`--region-url`"));
    }
}
