//! A DynamoDB-compatible server for the tests: dynoxide, in memory on a free 127.0.0.1 port,
//! stopped on drop. `scripts/install-test-services.sh` installs it; a test that cannot start it
//! fails, it never skips.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Dynoxide {
    child: Child,
    /// `http://127.0.0.1:PORT`, for `--dynamodb-endpoint`.
    pub endpoint: String,
    port: u16,
    /// The SQLite file it keeps its tables in, when it outlives a restart.
    db: Option<PathBuf>,
}

fn binary() -> PathBuf {
    if let Ok(path) = std::env::var("CITYSTREAM_DYNOXIDE") {
        return PathBuf::from(path);
    }
    let installed = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(".test-services/node_modules/@dynoxide/linux-x64/dynoxide");
    if installed.is_file() {
        return installed;
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("dynoxide"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("dynoxide is not installed: scripts/install-test-services.sh installs it")
        })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn spawn(port: u16, db: Option<&PathBuf>) -> Child {
    let mut command = Command::new(binary());
    command.args(["serve", "--host", "127.0.0.1", "--port", &port.to_string()]);
    if let Some(db) = db {
        command.arg("--db-path").arg(db);
    }
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start dynoxide");
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "dynoxide did not listen on port {port} within 30 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

impl Dynoxide {
    /// In memory.
    pub fn start() -> Dynoxide {
        let port = free_port();
        Dynoxide {
            child: spawn(port, None),
            endpoint: format!("http://127.0.0.1:{port}"),
            port,
            db: None,
        }
    }

    /// Keeping its tables in `db`, so that they outlive a kill.
    pub fn start_durable(db: PathBuf) -> Dynoxide {
        let port = free_port();
        Dynoxide {
            child: spawn(port, Some(&db)),
            endpoint: format!("http://127.0.0.1:{port}"),
            port,
            db: Some(db),
        }
    }

    /// Sends a signal (`-STOP`, `-CONT`, `-KILL`).
    pub fn signal(&self, signal: &str) {
        let sent = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(sent.success());
    }

    /// SIGKILLs it and starts it again on the same port and file.
    pub fn kill_and_restart(&mut self, down_for: Duration) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::thread::sleep(down_for);
        self.child = spawn(self.port, self.db.as_ref());
    }
}

/// An SDK client for a local endpoint, with dummy credentials.
pub fn client_at(endpoint: &str) -> aws_sdk_dynamodb::Client {
    use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-2"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
        .build();
    aws_sdk_dynamodb::Client::from_conf(config)
}

impl Drop for Dynoxide {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
