//! `clsync`: parse, validate, run; map errors to clsync's exit codes. Nothing else lives here.
#![forbid(unsafe_code)]

use clsync_rs::config::Config;

fn main() {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cli = match clsync_rs::cli::parse_with_config(argv.clone()) {
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
    let verbose = cli.verbose_level.map_or(3 + cli.verbose as i32, i32::from);
    let debug = cli.debug_level.map_or(cli.debug as i32, i32::from);
    log::configure(verbose, debug, cli.quiet, output);
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
    if let Some(shell) = cli.completions {
        use clap::CommandFactory;
        let mut cmd = clsync_rs::cli::Cli::command();
        clap_complete::generate(shell, &mut cmd, "clsync", &mut std::io::stdout());
        std::process::exit(0);
    }
    if let Some(sock) = &cli.ctl {
        std::process::exit(ctl(
            sock,
            cli.handler_args.first().map_or("status", String::as_str),
        ));
    }
    let cfg = match Config::from_cli(&cli).and_then(|c| c.with_custom_signals(&cli, &argv)) {
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

/// `clsync --ctl SOCKET [status|version|info|quit|die|dump]`: one request, the answer on
/// stdout (`dump`: into the configured --dump-dir; exit 1 unless it was written).
fn ctl(sock: &str, cmd: &str) -> i32 {
    use std::io::{BufRead, BufReader, Write};
    let line = match cmd {
        "status" => "status\n",
        "version" => "1 200\n",
        "info" => "1 201\n",
        "quit" => "1 250\n",
        "die" => "1 240\n",
        "dump" => "1 202\n",
        other => {
            clsync_rs::error!(
                "--ctl: unknown command {other:?} (status, version, info, quit, die, dump)"
            );
            return 22;
        }
    };
    let stream = match std::os::unix::net::UnixStream::connect(sock) {
        Ok(s) => s,
        Err(e) => {
            clsync_rs::error!("--ctl: cannot connect to {sock}: {e}");
            return 2;
        }
    };
    let mut r = BufReader::new(&stream);
    let mut greeting = String::new();
    let _ = r.read_line(&mut greeting);
    if (&stream).write_all(line.as_bytes()).is_err() {
        clsync_rs::error!("--ctl: the daemon closed the connection");
        return 1;
    }
    let mut answer = String::new();
    let _ = r.read_line(&mut answer);
    print!("{answer}");
    if cmd == "dump" && !answer.starts_with("1 302 ") {
        return 1;
    }
    0
}
