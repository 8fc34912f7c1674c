//! Process faults on real child processes (`sleep 30`), checked through /proc.

use std::process::{Child, Command};
use std::sync::Arc;
use std::time::Duration;

use flowline_chaos::{EventLog, Links, PidProcess, ProcessTarget, Schedule, Targets};
use futures_util::future::BoxFuture;
use parking_lot::Mutex;

/// A `sleep 30` child, killed and reaped when dropped.
pub struct Sleeper(pub Child);

impl Sleeper {
    pub fn spawn() -> Self {
        Sleeper(
            Command::new("sleep")
                .arg("30")
                .spawn()
                .expect("spawn sleep"),
        )
    }

    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The state letter of /proc/<pid>/stat (R, S, T, Z, ...), `None` if gone.
pub fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command is in parentheses and may contain spaces; the state follows ") ".
    let after = &stat[stat.rfind(')')? + 2..];
    after.chars().next()
}

/// Poll until the state matches (signals are asynchronous).
pub fn wait_state(pid: u32, want: &[char]) -> Option<char> {
    let mut s = proc_state(pid);
    for _ in 0..200 {
        if s.is_some_and(|c| want.contains(&c)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
        s = proc_state(pid);
    }
    s
}

#[test]
fn pause_resume_and_kill_a_real_process() {
    let child = Sleeper::spawn();
    let target = PidProcess {
        node_id: "node1".into(),
        pid: child.pid(),
    };
    assert_eq!(wait_state(child.pid(), &['S']), Some('S'));
    target.pause().unwrap();
    assert_eq!(wait_state(child.pid(), &['T']), Some('T'));
    target.resume().unwrap();
    assert_eq!(
        wait_state(child.pid(), &['S', 'R']).map(|c| c != 'T'),
        Some(true)
    );
    target.kill().unwrap();
    // Killed but not reaped yet: a zombie.
    assert_eq!(wait_state(child.pid(), &['Z']), Some('Z'));
}

/// A restartable node: `restart` spawns a new `sleep 30`.
struct Restartable {
    child: Mutex<Sleeper>,
    restarts: Mutex<u32>,
}

impl ProcessTarget for Restartable {
    fn node_id(&self) -> &str {
        "node2"
    }

    fn pid(&self) -> Option<u32> {
        Some(self.child.lock().pid())
    }

    fn restart(&self) -> BoxFuture<'_, flowline_chaos::Result<()>> {
        Box::pin(async move {
            let fresh = Sleeper::spawn();
            *self.child.lock() = fresh; // the old one is reaped by its Drop
            *self.restarts.lock() += 1;
            Ok(())
        })
    }
}

#[tokio::test]
async fn scheduled_pause_and_kill_with_restart() {
    let paused = Sleeper::spawn();
    let node2 = Arc::new(Restartable {
        child: Mutex::new(Sleeper::spawn()),
        restarts: Mutex::new(0),
    });
    let first_pid = node2.pid().unwrap();
    let faults: Vec<flowline_chaos::fault::FaultSpec> = serde_json::from_str(
        r#"[
        {"at":"50ms","duration":"200ms","kind":"pause","target":"node1"},
        {"at":"100ms","kind":"kill","target":"node2","restart_after":"150ms"}
    ]"#,
    )
    .unwrap();
    let zero = tokio::time::Instant::now();
    let events = EventLog::in_memory(zero.into_std());
    let targets = Targets::new(Links::None)
        .with_node(Arc::new(PidProcess {
            node_id: "node1".into(),
            pid: paused.pid(),
        }))
        .with_node(node2.clone());
    let mut handle = Schedule::new(faults, targets, events.clone())
        .unwrap()
        .run(zero);

    tokio::time::sleep_until(zero + Duration::from_millis(150)).await;
    assert_eq!(proc_state(paused.pid()), Some('T'), "paused at 50ms");
    assert_eq!(
        wait_state(first_pid, &['Z']),
        Some('Z'),
        "node2 killed at 100ms"
    );
    handle.wait().await;
    assert_ne!(proc_state(paused.pid()), Some('T'), "resumed at 250ms");
    assert_eq!(*node2.restarts.lock(), 1);
    let new_pid = node2.pid().unwrap();
    assert_ne!(new_pid, first_pid);
    assert_eq!(wait_state(new_pid, &['S']), Some('S'));

    let ev = events.events();
    let summary: Vec<_> = ev
        .iter()
        .map(|e| (e.action.as_str(), e.kind.as_str(), e.target.join(",")))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("inject", "pause", "node1".to_string()),
            ("inject", "kill", "node2".to_string()),
            ("heal", "pause", "node1".to_string()),
            ("heal", "kill", "node2".to_string()),
        ]
    );
    handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_paused_process_is_resumed_when_the_schedule_is_dropped() {
    let child = Sleeper::spawn();
    let faults: Vec<flowline_chaos::fault::FaultSpec> =
        serde_json::from_str(r#"[{"at":"0ms","duration":"60s","kind":"pause","target":"node*"}]"#)
            .unwrap();
    let zero = tokio::time::Instant::now();
    let targets = Targets::new(Links::None).with_node(Arc::new(PidProcess {
        node_id: "node7".into(),
        pid: child.pid(),
    }));
    let handle = Schedule::new(faults, targets, EventLog::in_memory(zero.into_std()))
        .unwrap()
        .run(zero);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(wait_state(child.pid(), &['T']), Some('T'));
    drop(handle);
    assert_ne!(
        proc_state(child.pid()),
        Some('T'),
        "resumed synchronously on drop"
    );
}
