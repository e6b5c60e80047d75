//! A TCP proxy that holds every byte a client sends for a fixed delay before passing it on, so
//! that each request to the server behind it takes that much longer, as the round trip to a
//! real DynamoDB table does (about 8 ms). Answers come back at once. For the DynamoDB
//! benchmarks (`scripts/bench/dynamodb.sh`):
//!
//! ```sh
//! cargo run --release --example latency_proxy -- 127.0.0.1:18001 127.0.0.1:18000 8ms
//! ```

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Chunks read from a client and not yet forwarded, per connection.
const QUEUE: usize = 1024;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [listen, upstream, delay] = args.as_slice() else {
        anyhow::bail!("usage: latency_proxy LISTEN_ADDR UPSTREAM_ADDR DELAY (e.g. 8ms)");
    };
    let delay = humantime::parse_duration(delay)?;
    let listener = TcpListener::bind(listen).await?;
    eprintln!("latency_proxy: {listen} -> {upstream}, +{delay:?} per request");
    loop {
        let (client, _) = listener.accept().await?;
        let upstream = upstream.clone();
        tokio::spawn(async move {
            if let Err(e) = relay(client, &upstream, delay).await {
                eprintln!("latency_proxy: connection ended: {e}");
            }
        });
    }
}

async fn relay(client: TcpStream, upstream: &str, delay: Duration) -> std::io::Result<()> {
    client.set_nodelay(true)?;
    let server = TcpStream::connect(upstream).await?;
    server.set_nodelay(true)?;
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(QUEUE);
    let read_requests = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = client_read.read(&mut buf).await?;
            if n == 0
                || tx
                    .send((Instant::now() + delay, buf[..n].to_vec()))
                    .await
                    .is_err()
            {
                return Ok::<_, std::io::Error>(());
            }
        }
    };
    let forward_requests = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            server_write.write_all(&chunk).await?;
        }
        server_write.shutdown().await
    };
    let answers = tokio::io::copy(&mut server_read, &mut client_write);
    let (a, b, c) = tokio::join!(read_requests, forward_requests, answers);
    a.and(b).and(c.map(|_| ()))
}
