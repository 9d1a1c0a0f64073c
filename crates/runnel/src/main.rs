//! The `runnel` command. The broker (`runnel serve`) lands with the Kafka wire server;
//! until then this prints what exists.

use std::process::ExitCode;

const USAGE: &str = "\
runnel: an event-streaming platform that speaks the Kafka protocol

USAGE:
    runnel <COMMAND>

COMMANDS:
    help      Print this message

The storage engine (crate runnel-log) is in place; `runnel serve`, the Kafka wire
server, is the next piece of work. See README.md.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        None | Some("help" | "--help" | "-h") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!("runnel: unknown command {other:?}\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
}
