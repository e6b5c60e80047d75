//! A real Kafka-protocol broker for the tests: tansu, started on a free 127.0.0.1 port with
//! in-memory storage, stopped on drop. `scripts/test.sh` installs it; a test that cannot start
//! it fails, it never skips.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Tansu {
    child: Child,
    /// `127.0.0.1:PORT`, for `--brokers`.
    pub addr: String,
    log: PathBuf,
    /// The directory of its SQLite storage, when it outlives a restart.
    dir: Option<PathBuf>,
}

fn binary() -> PathBuf {
    if let Ok(path) = std::env::var("CITYSTREAM_TANSU") {
        return PathBuf::from(path);
    }
    let in_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("tansu"))
        .find(|p| p.is_file());
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    in_path
        .or_else(|| cargo_home.map(|h| h.join("bin/tansu")).filter(|p| p.is_file()))
        .unwrap_or_else(|| {
            panic!("tansu is not installed: scripts/test.sh installs it (cargo install tansu --version 0.6.0 --features dynostore,libsql --locked)")
        })
}

fn spawn(addr: &str, log: &PathBuf, dir: Option<&PathBuf>) -> Child {
    let url = format!("tcp://{addr}");
    let out = std::fs::File::create(log).expect("tansu log file");
    let mut command = Command::new(binary());
    command.args([
        "broker",
        "--listener-url",
        &url,
        "--advertised-listener-url",
        &url,
    ]);
    match dir {
        // tansu takes the path of an sqlite:// URL relative to where it runs.
        Some(dir) => command
            .current_dir(dir)
            .args(["--storage-engine", "sqlite://tansu.db"]),
        None => command.args(["--storage-engine", "memory://tansu/"]),
    };
    let child = command
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("log handle"))
        .stderr(out)
        .spawn()
        .expect("start tansu");
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "tansu did not listen on {addr} within 30 s; its log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

impl Tansu {
    /// With in-memory storage.
    pub fn start() -> Tansu {
        Self::start_in(None)
    }

    /// With its logs kept in an SQLite file under `dir`, so that they outlive a restart.
    pub fn start_durable(dir: PathBuf) -> Tansu {
        Self::start_in(Some(dir))
    }

    fn start_in(dir: Option<PathBuf>) -> Tansu {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let addr = format!("127.0.0.1:{port}");
        let log = std::env::temp_dir().join(format!("citystream-tansu-{port}.log"));
        let child = spawn(&addr, &log, dir.as_ref());
        Tansu {
            child,
            addr,
            log,
            dir,
        }
    }

    /// SIGKILLs it and, after `down_for`, starts it again on the same address and storage.
    pub fn kill_and_restart(&mut self, down_for: Duration) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::thread::sleep(down_for);
        self.child = spawn(&self.addr, &self.log, self.dir.as_ref());
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}
