//! A Kubernetes ConfigMap update reaches a running checker without a restart.
//!
//! deploy/k8s mounts the ConfigMap as a directory (no `subPath`), which the kubelet updates the
//! way its atomic writer does: the files live in a timestamped directory, `..data` is a
//! symlink to it and each key (`web-monitor.toml`) a symlink through `..data`. An update writes
//! a new timestamped directory, points a temporary symlink at it, renames that over `..data`
//! and removes the old directory. This test does exactly that under a `checker --stdout` and
//! checks that the new target is checked, by the same process, while the old one goes on.

use std::path::{Path, PathBuf};
use std::time::Duration;

use monitor_core::report::Report;
use monitor_core::testing::ok_site;
use tokio::io::{AsyncBufReadExt, BufReader};

mod support;
use support::checker_command;

/// The file name of the settings key, as deploy/k8s mounts it.
const KEY: &str = "web-monitor.toml";

/// A ConfigMap volume as the kubelet lays it out.
struct ConfigMapVolume {
    dir: PathBuf,
    generation: u32,
}

impl ConfigMapVolume {
    /// The volume with its first data: `..<ts>/KEY`, `..data -> ..<ts>`, `KEY -> ..data/KEY`.
    fn new(dir: &Path, contents: &str) -> ConfigMapVolume {
        let mut volume = ConfigMapVolume {
            dir: dir.to_path_buf(),
            generation: 0,
        };
        let first = volume.write_generation(contents);
        std::os::unix::fs::symlink(&first, dir.join("..data")).expect("..data");
        std::os::unix::fs::symlink(Path::new("..data").join(KEY), dir.join(KEY)).expect("key");
        volume
    }

    /// The path the checker is given, as in the pod: the key's symlink.
    fn settings(&self) -> PathBuf {
        self.dir.join(KEY)
    }

    /// A new timestamped directory holding `contents`; its name, relative to the volume.
    fn write_generation(&mut self, contents: &str) -> PathBuf {
        self.generation += 1;
        let name = PathBuf::from(format!("..2026_11_28_10_00_0{}.000000001", self.generation));
        std::fs::create_dir(self.dir.join(&name)).expect("timestamped dir");
        std::fs::write(self.dir.join(&name).join(KEY), contents).expect("write data");
        name
    }

    /// An update as the kubelet makes it: new data, `..data_tmp` renamed over `..data`, the
    /// old data removed.
    fn update(&mut self, contents: &str) {
        let old = std::fs::read_link(self.dir.join("..data")).expect("..data is a symlink");
        let new = self.write_generation(contents);
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&new, &tmp).expect("..data_tmp");
        std::fs::rename(&tmp, self.dir.join("..data")).expect("swap ..data");
        std::fs::remove_dir_all(self.dir.join(old)).expect("remove the old data");
    }
}

fn target(port: u16, id: &str) -> String {
    format!(
        "[[monitored_urls]]\nid = \"{id}\"\nurl = \"http://127.0.0.1:{port}/{id}\"\nperiod = \"200ms\"\ntimeout = \"100ms\"\n"
    )
}

/// Reads report lines for `d`, returning the target ids seen, in order.
async fn read_for(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    d: Duration,
) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + d;
    let mut seen = Vec::new();
    while let Ok(Ok(Some(line))) = tokio::time::timeout_at(deadline, lines.next_line()).await {
        let report = Report::from_json(line.as_bytes()).expect("a report per line");
        seen.push(report.target_id);
    }
    seen
}

#[tokio::test]
async fn a_configmap_update_by_the_kubelets_symlink_swap_reaches_a_running_checker() {
    let port = ok_site().await;
    let dir = tempfile::tempdir().expect("dir");
    let head = "[checker]\nwatch_config = \"200ms\"\n";
    let mut volume = ConfigMapVolume::new(dir.path(), &format!("{head}{}", target(port, "first")));

    let mut child = checker_command(&volume.settings(), &["--stdout"])
        .spawn()
        .expect("starts");
    let pid = child.id();
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let before = read_for(&mut lines, Duration::from_millis(1000)).await;
    assert!(
        before.iter().any(|t| t == "first"),
        "first is checked: {before:?}"
    );
    assert!(
        !before.iter().any(|t| t == "second"),
        "second is not there yet"
    );

    volume.update(&format!(
        "{head}{}{}",
        target(port, "first"),
        target(port, "second")
    ));
    let after = read_for(&mut lines, Duration::from_millis(2000)).await;

    assert!(
        child.try_wait().expect("status").is_none(),
        "the checker is still running"
    );
    assert_eq!(child.id(), pid, "the same process: no restart");
    let seconds = after.iter().filter(|t| *t == "second").count();
    let firsts = after.iter().filter(|t| *t == "first").count();
    assert!(
        seconds >= 3,
        "the new target is checked after the swap: {after:?}"
    );
    assert!(firsts >= 5, "the old target goes on: {after:?}");
    child.start_kill().expect("kill");
    let _ = child.wait().await;
}
