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

impl Tansu {
    pub fn start() -> Tansu {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let addr = format!("127.0.0.1:{port}");
        let url = format!("tcp://{addr}");
        let log = std::env::temp_dir().join(format!("citystream-tansu-{port}.log"));
        let out = std::fs::File::create(&log).expect("tansu log file");
        let child = Command::new(binary())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log handle"))
            .stderr(out)
            .spawn()
            .expect("start tansu");
        let tansu = Tansu { child, addr, log };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(&tansu.addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "tansu did not listen on {} within 30 s; its log:\n{}",
                tansu.addr,
                std::fs::read_to_string(&tansu.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        tansu
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}
