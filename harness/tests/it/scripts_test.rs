//! `scripts/test` on a simulated fresh machine: a PATH without Postgres, Redis, Docker and
//! cargo, with test doubles for `apt-get` (which "installs" by linking this machine's real
//! binaries where Debian's packages put them) and `cargo` (which records how it was called
//! and whether the servers it was given answer). Nothing is installed for real.

use std::collections::HashSet;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Programs the simulated machine does not have.
const ABSENT: &[&str] = &[
    "pg_ctl",
    "initdb",
    "postgres",
    "pg_isready",
    "pg_ctlcluster",
    "redis-server",
    "redis-cli",
    "docker",
    "apt-get",
    "cargo",
];

struct Machine {
    _tmp: tempfile::TempDir,
    root: PathBuf,
}

impl Machine {
    /// A PATH of links to everything on this PATH except `ABSENT`, plus `fake/` (doubles).
    fn new(with_apt: bool) -> Machine {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        // The throwaway Postgres runs as an unprivileged user that must reach the links.
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
        let masked = root.join("bin");
        let fake = root.join("fake");
        std::fs::create_dir_all(&masked).unwrap();
        std::fs::create_dir_all(&fake).unwrap();
        std::fs::create_dir_all(root.join("pg")).unwrap();
        let mut seen: HashSet<std::ffi::OsString> = HashSet::new();
        for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name();
                if ABSENT.iter().any(|a| name == *a) || !seen.insert(name.clone()) {
                    continue;
                }
                let _ = symlink(e.path(), masked.join(&name));
            }
        }
        let real_pg = real_pg_bin();
        let real_redis = which("redis-server");
        let real_redis_cli = which("redis-cli");
        script(
            &fake.join("cargo"),
            &format!(
                "#!/bin/sh\n\
                 {{ echo \"args: $*\"; echo \"DATABASE_URL=$DATABASE_URL\"; echo \"REDIS_URL=$REDIS_URL\";\n\
                 {pg}/pg_isready -d \"$DATABASE_URL\" && echo postgres-ready;\n\
                 {cli} -u \"$REDIS_URL\" ping; }} >> {log} 2>&1\n\
                 exit 0\n",
                pg = real_pg.display(),
                cli = real_redis_cli.display(),
                log = root.join("cargo.log").display(),
            ),
        );
        if with_apt {
            script(
                &fake.join("apt-get"),
                &format!(
                    "#!/bin/sh\n\
                     echo \"$*\" >> {log}\n\
                     for p in \"$@\"; do case \"$p\" in\n\
                     postgresql) mkdir -p {root}/pg/16/bin && ln -sf {pg}/* {root}/pg/16/bin/ ;;\n\
                     redis-server) ln -sf {redis} {cli} {fake}/ ;;\n\
                     esac; done\n",
                    log = root.join("apt.log").display(),
                    root = root.display(),
                    pg = real_pg.display(),
                    redis = real_redis.display(),
                    cli = real_redis_cli.display(),
                    fake = fake.display(),
                ),
            );
        }
        Machine { _tmp: tmp, root }
    }

    /// Run `scripts/test ARGS` with nothing answering at the URLs it is given.
    fn scripts_test(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// `scripts/test ARGS` on this machine, to run (more environment may be added).
    fn command(&self, args: &[&str]) -> Command {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let path = std::env::join_paths([self.root.join("fake"), self.root.join("bin")]).unwrap();
        let mut c = Command::new(repo.join("scripts/test"));
        c.args(args)
            .env("PATH", path)
            .env("FLOWLINE_PG_BINDIRS", self.root.join("pg/*/bin"))
            .env(
                "DATABASE_URL",
                format!("postgres://postgres@127.0.0.1:{}/test", dead_port()),
            )
            .env("REDIS_URL", format!("redis://127.0.0.1:{}", dead_port()));
        c
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.root.join(name)).unwrap_or_default()
    }
}

fn script(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn which(name: &str) -> PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("this test links the machine's real {name}; it is not on PATH"))
}

fn real_pg_bin() -> PathBuf {
    std::fs::read_dir("/usr/lib/postgresql")
        .ok()
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .find(|b| b.join("initdb").is_file())
        .unwrap_or_else(|| which("initdb").parent().unwrap().to_path_buf())
}

/// A loopback port nothing listens on (bound, then released).
fn dead_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn fresh_machine_installs_postgres_and_redis_and_reaches_cargo_test() {
    let m = Machine::new(true);
    let o = m.scripts_test(&["--no-run"]);
    let err = String::from_utf8_lossy(&o.stderr);
    if !is_root() {
        // Not root: nothing may be installed, and the script says exactly what to run.
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(
            err.contains("sudo apt-get install -y postgresql redis-server"),
            "{err}"
        );
        assert_eq!(m.log("apt.log"), "");
        return;
    }
    assert!(o.status.success(), "{err}");
    let apt = m.log("apt.log");
    assert!(
        apt.lines()
            .any(|l| l.contains("install") && l.contains("postgresql redis-server")),
        "{apt}"
    );
    let cargo = m.log("cargo.log");
    assert!(
        cargo.contains("args: test --workspace --no-run"),
        "{cargo}\n{err}"
    );
    // Throwaway servers from the "installed" binaries, answering while cargo test runs.
    assert!(cargo.contains("postgres-ready"), "{cargo}\n{err}");
    assert!(cargo.contains("PONG"), "{cargo}\n{err}");
    assert!(err.contains("starting a throwaway Postgres"), "{err}");
    assert!(err.contains("starting a throwaway redis-server"), "{err}");
}

#[test]
fn without_apt_get_the_script_says_what_to_install_and_stops() {
    let m = Machine::new(false);
    let o = m.scripts_test(&[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("postgresql redis-server"), "{err}");
    assert!(err.contains("DATABASE_URL"), "{err}");
    assert_eq!(m.log("cargo.log"), "", "cargo test must not run");
}

/// Whether this test runs as root (`/proc/self` belongs to the effective user).
fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

#[test]
fn a_package_filter_limits_cargo_test_and_the_set_up() {
    let m = Machine::new(true);
    // flowline-protocol needs no services, browser or kernel tools: nothing is installed or
    // started, and cargo test gets the filter without --workspace.
    let o = m.scripts_test(&["-p", "flowline-protocol", "--no-run"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert_eq!(m.log("apt.log"), "", "{err}");
    let cargo = m.log("cargo.log");
    assert!(
        cargo
            .lines()
            .any(|l| l == "args: test -p flowline-protocol --no-run"),
        "{cargo}"
    );
    assert!(!err.contains("throwaway"), "{err}");
}

#[test]
fn the_harness_filter_sets_up_only_what_the_harness_needs() {
    if !is_root() {
        return; // installing needs root; the unfiltered test covers the non-root message
    }
    let m = Machine::new(true);
    let o = m.scripts_test(&["--package=flowline-harness", "--no-run"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let apt = m.log("apt.log");
    assert!(apt.contains("postgresql redis-server"), "{apt}");
    assert!(
        !apt.contains("nftables") && !apt.contains("chromium"),
        "{apt}"
    );
    let cargo = m.log("cargo.log");
    assert!(
        cargo
            .lines()
            .any(|l| l == "args: test --package=flowline-harness --no-run"),
        "{cargo}"
    );
    assert!(
        cargo.contains("postgres-ready") && cargo.contains("PONG"),
        "{cargo}"
    );
}

#[test]
fn setup_only_installs_and_then_stops_before_servers_and_cargo() {
    if !is_root() {
        return; // installing needs root; the unfiltered test covers the non-root message
    }
    let m = Machine::new(true);
    let o = m
        .command(&["-p", "flowline-server"])
        .env("FLOWLINE_TEST_SETUP_ONLY", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    // What the crate needs is installed, but no server is started and no test runs.
    let apt = m.log("apt.log");
    assert!(apt.contains("postgresql redis-server"), "{apt}");
    assert!(!err.contains("starting a throwaway"), "{err}");
    assert_eq!(m.log("cargo.log"), "", "cargo test must not run");
    assert!(err.contains("set-up done"), "{err}");
}

#[test]
fn a_bad_setup_only_value_is_refused_before_anything_is_installed() {
    let m = Machine::new(true);
    let o = m
        .command(&[])
        .env("FLOWLINE_TEST_SETUP_ONLY", "yes")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("FLOWLINE_TEST_SETUP_ONLY must be 1 or 0"),
        "{err}"
    );
    assert_eq!(m.log("apt.log"), "", "nothing may be installed");
    assert_eq!(m.log("cargo.log"), "", "cargo test must not run");
}
