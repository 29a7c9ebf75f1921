//! The real `eddy` binary: `eddy run` in a folder of its own with the
//! plugins a test names, `eddy check`, and its HTTP endpoints.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{bootstrap, env_path, unique};

/// The plugin files a test needs, from the example or the test plugins.
pub enum PluginFile {
    Example(&'static str),
    Test(&'static str),
}

/// A fresh folder with `eddy.toml` and `plugins/` holding `plugins`.
fn workspace(prefix: &str, config: &str, plugins: &[PluginFile]) -> PathBuf {
    let dir = std::env::temp_dir().join(unique(prefix));
    std::fs::create_dir_all(dir.join("plugins")).expect("temp dir");
    for plugin in plugins {
        let (folder, name) = match plugin {
            PluginFile::Example(name) => (env_path("EDDY_PLUGIN_DIR"), *name),
            PluginFile::Test(name) => (env_path("EDDY_TEST_PLUGIN_DIR"), *name),
        };
        let file = format!("{name}.wasm");
        std::fs::copy(folder.join(&file), dir.join("plugins").join(&file))
            .unwrap_or_else(|e| panic!("cannot copy plugin {file}: {e}"));
    }
    std::fs::write(dir.join("eddy.toml"), config).expect("write config");
    dir
}

/// A running `eddy run` process with its own config and plugin folder.
pub struct Eddy {
    child: Option<Child>,
    pub dir: PathBuf,
    env: Vec<(String, String)>,
}

impl Eddy {
    /// Writes `config` (whose `[plugins] dir` should be `"plugins"`) and the
    /// plugin files into a fresh folder and starts eddy there.
    pub fn start(config: &str, plugins: &[PluginFile]) -> Eddy {
        Eddy::start_with_env(config, plugins, &[])
    }

    /// [`Eddy::start`] with extra environment variables.
    pub fn start_with_env(config: &str, plugins: &[PluginFile], env: &[(&str, &str)]) -> Eddy {
        let dir = workspace("eddy-e2e", config, plugins);
        let mut eddy = Eddy {
            child: None,
            dir,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        eddy.launch();
        eddy
    }

    /// Starts eddy (again) on the same folder.
    pub fn launch(&mut self) {
        assert!(self.child.is_none(), "eddy is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("eddy.log"))
            .expect("log file");
        let child = Command::new(env_path("EDDY_BIN"))
            .args(["run", "--config"])
            .arg(self.dir.join("eddy.toml"))
            .env("RUST_LOG", "info,eddy=debug")
            .env("KAFKA_BOOTSTRAP_SERVERS", bootstrap())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("start eddy");
        self.child = Some(child);
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().expect("try_wait").is_none())
    }

    /// The running eddy's resident memory, in KiB.
    pub fn resident_kib(&self) -> u64 {
        self.status_kib("VmRSS:")
    }

    /// The most resident memory the running eddy has had, in KiB.
    pub fn peak_resident_kib(&self) -> u64 {
        self.status_kib("VmHWM:")
    }

    fn status_kib(&self, field: &str) -> u64 {
        let child = self.child.as_ref().expect("eddy is not running");
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", child.id())).expect("/proc status");
        status
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .expect(field)
    }

    /// Sends `signal` (`STOP`, `CONT`, …) to the running eddy.
    pub fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("eddy is not running");
        let sent = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.id().to_string())
            .status()
            .expect("kill");
        assert!(sent.success(), "kill -{signal} failed");
    }

    /// SIGKILL: no chance to finish or commit anything.
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("eddy is not running");
        child.kill().expect("kill -9");
        child.wait().expect("wait for eddy");
    }

    /// SIGTERM, and waits for a clean exit.
    pub fn stop(&mut self) {
        let mut child = self.child.take().expect("eddy is not running");
        Command::new("kill")
            .arg(child.id().to_string())
            .status()
            .expect("kill");
        let status = child.wait().expect("wait for eddy");
        assert!(
            status.success(),
            "eddy exited with {status}; log:\n{}",
            self.log()
        );
    }

    /// The folder eddy watches for plugins.
    pub fn plugin_dir(&self) -> PathBuf {
        self.dir.join("plugins")
    }

    /// Waits until eddy's log has `needle` at least `count` times.
    pub fn wait_for_log(&self, needle: &str, count: usize, limit: Duration) -> bool {
        let started = Instant::now();
        while started.elapsed() < limit {
            if self.log().matches(needle).count() >= count {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// The address of eddy's HTTP endpoints, from its start-up summary.
    pub fn http_addr(&self) -> String {
        let marker = "/readyz on http://";
        assert!(
            self.wait_for_log(marker, 1, Duration::from_secs(30)),
            "eddy never said where it serves HTTP; log:\n{}",
            self.log()
        );
        let log = self.log();
        let at = log.rfind(marker).expect("marker") + marker.len();
        log[at..]
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
            .collect()
    }

    /// Every thread's stack of the running eddy, from `gdb` if there is
    /// one: for a test that finds eddy stuck.
    pub fn stacks(&self) -> String {
        let Some(child) = &self.child else {
            return "eddy is not running".to_string();
        };
        match Command::new("gdb")
            .args(["-p", &child.id().to_string(), "-batch", "-ex"])
            .arg("thread apply all bt 25")
            .output()
        {
            Ok(out) => String::from_utf8_lossy(&out.stdout).into_owned(),
            Err(e) => format!("no stacks (gdb: {e})"),
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("eddy.log")).unwrap_or_default()
    }
}

impl Drop for Eddy {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The `[kafka]` and `[plugins]` part of a test config.
pub fn config_head(group: &str) -> String {
    format!(
        "[kafka]\nbootstrap_servers = \"{}\"\ngroup_id = \"{group}\"\nauto_offset_reset = \"earliest\"\n\n\
         [plugins]\ndir = \"plugins\"\n\n[http]\nlisten = \"127.0.0.1:0\"\n\n",
        bootstrap()
    )
}

/// Runs `eddy check` on `config` with `plugins`; returns exit code and output.
pub fn check(config: &str, plugins: &[PluginFile], extra_files: &[(&str, &[u8])]) -> (i32, String) {
    let dir = workspace("eddy-check", config, plugins);
    for (name, bytes) in extra_files {
        std::fs::write(dir.join("plugins").join(name), bytes).expect("write file");
    }
    let output = Command::new(env_path("EDDY_BIN"))
        .args(["check", "--config"])
        .arg(dir.join("eddy.toml"))
        .output()
        .expect("run eddy check");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code().unwrap_or(-1), text)
}

/// A plain HTTP GET; returns the status code and the body.
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to eddy's HTTP address");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}
