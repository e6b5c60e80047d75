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

impl Dynoxide {
    pub fn start() -> Dynoxide {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(binary())
            .args(["serve", "--host", "127.0.0.1", "--port", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start dynoxide");
        let server = Dynoxide {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "dynoxide did not listen on port {port} within 30 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
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
