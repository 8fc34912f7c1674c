//! Logs written to a file (a run folder's `logs/<child>.log`) carry no ANSI colour
//! escapes: colour only when stderr is a terminal.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::util::flowline;

#[test]
fn log_to_a_file_has_no_ansi_escapes() {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("node1.log");
    let mut child = flowline()
        .env("FLOWLINE_LOG", "info")
        .env_remove("NO_COLOR")
        .args(["server", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // The announce line on stdout: the node is serving (and has logged that).
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("listening"), "{line}");
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "node did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("serving"), "nothing logged:\n{text}");
    assert!(
        !text.contains('\x1b'),
        "ANSI escapes in a log file:\n{text:?}"
    );
}
