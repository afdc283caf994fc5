//! The `offsitedb` command: parses arguments, calls the library, prints. Every decision is in
//! the `offsitedb` library crate; each command is one file in `cmd/`, and this file only routes
//! to them and turns the outcome into an exit code (`offsitedb::exit::ExitCode`).

mod cmd;
mod output;

use std::process::ExitCode;
use std::sync::LazyLock;

use clap::{Parser, Subcommand};

static AFTER_HELP: LazyLock<String> =
    LazyLock::new(|| format!("Exit codes: {}.", offsitedb::exit::ExitCode::summary()));

#[derive(Parser)]
#[command(
    name = "offsitedb",
    version,
    about = "Encrypted PostgreSQL backups into a bucket you own, proven by restoring them",
    after_help = AFTER_HELP.as_str()
)]
struct Cli {
    #[command(flatten)]
    global: cmd::Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Keygen(cmd::keygen::Args),
    Key(cmd::key::Args),
    Backup(cmd::backup::Args),
    List(cmd::list::Args),
    Show(cmd::show::Args),
    Decrypt(cmd::decrypt::Args),
    Restore(Box<cmd::restore::Args>),
    Drill(cmd::drill::Args),
    Init(cmd::init::Args),
    Check(cmd::check::Args),
    RoleSql(cmd::role_sql::Args),
    Run(cmd::run::Args),
    Serve(cmd::serve::Args),
    AlertTest(cmd::alert_test::Args),
    Prune(cmd::prune::Args),
    History(cmd::history::Args),
    Fleet(cmd::fleet::Args),
    Demo(cmd::demo::Args),
    WalPush(cmd::wal_push::Args),
    WalFetch(cmd::wal_fetch::Args),
    WalStream(cmd::wal_stream::Args),
    BackupPush(cmd::backup_push::Args),
    BackupFetch(cmd::backup_fetch::Args),
    BackupList(cmd::backup_list::Args),
    WalShow(cmd::wal_show::Args),
    WalVerify(cmd::wal_verify::Args),
    Verify(cmd::verify::Args),
    Report(cmd::report::Args),
}

fn main() -> ExitCode {
    // Before any secret is read (the environment, a key file, the configuration).
    offsitedb::harden::no_core_dumps();
    let cli = Cli::parse();
    offsitedb::interrupt::install();
    let g = cli.global;
    // `serve --json` logs JSON lines (its result is its log).
    let log_format = match &cli.command {
        Command::Serve(_) if g.json => Some(cmd::serve::LogFormat::Json),
        Command::Serve(a) => Some(a.log_format),
        _ => None,
    };
    output::init(&g, log_format);
    let result = match cli.command {
        Command::Keygen(a) => cmd::keygen::run(a, &g),
        Command::Key(a) => cmd::key::run(a, &g),
        Command::Backup(a) => cmd::backup::run(a, &g),
        Command::List(a) => cmd::list::run(a, &g),
        Command::Show(a) => cmd::show::run(a, &g),
        Command::Decrypt(a) => cmd::decrypt::run(a, &g),
        Command::Restore(a) => cmd::restore::run(*a, &g),
        Command::Drill(a) => cmd::drill::run(a, &g),
        Command::Init(a) => cmd::init::run(a, &g),
        Command::Check(a) => cmd::check::run(a, &g),
        Command::RoleSql(a) => cmd::role_sql::run(a, &g),
        Command::Run(a) => cmd::run::run(a, &g),
        Command::Serve(a) => cmd::serve::run(a, &g),
        Command::AlertTest(a) => cmd::alert_test::run(a, &g),
        Command::Prune(a) => cmd::prune::run(a, &g),
        Command::History(a) => cmd::history::run(a, &g),
        Command::Fleet(a) => cmd::fleet::run(a, &g),
        Command::Demo(a) => cmd::demo::run(a, &g),
        Command::WalPush(a) => cmd::wal_push::run(a, &g),
        Command::WalFetch(a) => cmd::wal_fetch::run(a, &g),
        Command::WalStream(a) => cmd::wal_stream::run(a, &g),
        Command::BackupPush(a) => cmd::backup_push::run(a, &g),
        Command::BackupFetch(a) => cmd::backup_fetch::run(a, &g),
        Command::BackupList(a) => cmd::backup_list::run(a, &g),
        Command::WalShow(a) => cmd::wal_show::run(a, &g),
        Command::WalVerify(a) => cmd::wal_verify::run(a, &g),
        Command::Verify(a) => cmd::verify::run(a, &g),
        Command::Report(a) => cmd::report::run(a, &g),
    };
    match result {
        Ok(()) => offsitedb::exit::ExitCode::Success.into(),
        Err(e) => match e.downcast_ref::<cmd::Exit>() {
            Some(cmd::Exit(code)) => std::process::ExitCode::from(*code),
            None => output::print_error(&e).into(),
        },
    }
}
