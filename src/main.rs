//! `clsync`: parse, validate, run; map errors to clsync's exit codes. Nothing else lives here.
#![forbid(unsafe_code)]

use clsync_rs::config::Config;

fn main() {
    let cli = match clsync_rs::cli::parse_with_config(std::env::args_os().collect()) {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            clsync_rs::error!("{}", e.msg);
            std::process::exit(e.code);
        }
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
    use clsync_rs::cli::OutputArg;
    use clsync_rs::log::{self, Output};
    let output = match cli.output {
        OutputArg::Stderr => Output::Stderr,
        OutputArg::Stdout => Output::Stdout,
        OutputArg::Syslog => Output::Syslog,
    };
    log::configure(3 + cli.verbose as i32, cli.debug as i32, cli.quiet, output);
    if output == Output::Syslog {
        let Some(facility) = log::facility_code(&cli.syslog_facility) else {
            clsync_rs::error!(
                "--syslog-facility={}: unknown facility",
                cli.syslog_facility
            );
            std::process::exit(22);
        };
        let path = std::path::Path::new(&cli.syslog_socket);
        if let Err(e) = log::open_syslog(path, facility, &cli.syslog_ident) {
            clsync_rs::error!(
                "cannot connect to the syslog socket {}: {e} (see --syslog-socket)",
                path.display()
            );
            std::process::exit(2);
        }
    }
    let cfg = match Config::from_cli(&cli) {
        Ok(c) => c,
        Err(e) => {
            clsync_rs::error!("{e}");
            std::process::exit(e.code);
        }
    };
    if cli.check_config {
        print!("{}", cfg.describe());
        std::process::exit(0);
    }
    match clsync_rs::privsep::spawn::run(cfg) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            clsync_rs::error!("{}", e.msg);
            std::process::exit(e.code);
        }
    }
}
