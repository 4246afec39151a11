//! `clsync`: parse, validate, run; map errors to clsync's exit codes. Nothing else lives here.
#![forbid(unsafe_code)]

use clap::Parser;
use clsync_rs::cli::Cli;
use clsync_rs::config::Config;

fn main() {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            let code = match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => 0,
                _ => 22,
            };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    clsync_rs::log::configure(3 + cli.verbose as i32, cli.debug as i32, cli.quiet, false);
    let cfg = match Config::from_cli(&cli) {
        Ok(c) => c,
        Err(e) => {
            clsync_rs::error!("{e}");
            std::process::exit(e.code);
        }
    };
    match clsync_rs::privsep::spawn::run(cfg) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            clsync_rs::error!("{}", e.msg);
            std::process::exit(e.code);
        }
    }
}
