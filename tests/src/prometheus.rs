//! A real Prometheus (Debian's `prometheus` package) for the tests: its own config, TSDB
//! directory and loopback port, scraping one target; queried through its HTTP API.

use std::{
    fs,
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

/// A private Prometheus server, stopped and removed on drop.
pub struct Prometheus {
    child: Child,
    dir: PathBuf,
    /// Where its HTTP API listens (`127.0.0.1:port`).
    pub addr: String,
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl Prometheus {
    /// Starts Prometheus scraping `target` (`host:port`, path `/metrics`) every
    /// `interval` (a Prometheus duration such as `1s`), and waits until it is ready.
    pub fn start(target: &str, interval: &str) -> Prometheus {
        let bin = which("prometheus").unwrap_or_else(|| {
            panic!(
                "prometheus not found: `cargo xtask test` installs Debian's `prometheus` package"
            )
        });
        let dir =
            std::env::temp_dir().join(format!("oomx-prom-{}-{}", std::process::id(), free_port()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("data")).unwrap();
        let cfg = format!(
            "global:\n  scrape_interval: {interval}\n  scrape_timeout: {interval}\n  evaluation_interval: {interval}\n\
             scrape_configs:\n  - job_name: oom-observer\n    static_configs:\n      - targets: ['{target}']\n"
        );
        fs::write(dir.join("prometheus.yml"), cfg).unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let log = fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new(bin)
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting prometheus");
        let p = Prometheus { child, dir, addr };
        let t0 = Instant::now();
        loop {
            if get(&format!("http://{}/-/ready", p.addr)).is_some_and(|(code, _)| code == 200) {
                return p;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "prometheus not ready within 60 s; its log:\n{}",
                p.log()
            );
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// Runs an instant PromQL query through `/api/v1/query`; returns `data.result`.
    pub fn query(&self, promql: &str) -> Vec<Value> {
        let url = format!("http://{}/api/v1/query?query={}", self.addr, encode(promql));
        let (code, body) = get(&url).unwrap_or_else(|| panic!("querying prometheus: {url}"));
        let v: Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("prometheus answered {code} with non-JSON ({e}): {body}"));
        assert_eq!(v["status"], "success", "query {promql}: {v}");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// A query's result as `label value → sample value`, by one label.
    pub fn by_label(&self, promql: &str, label: &str) -> Vec<(String, f64)> {
        let mut out: Vec<(String, f64)> = self
            .query(promql)
            .iter()
            .map(|s| {
                (
                    s["metric"][label].as_str().unwrap_or_default().to_string(),
                    s["value"][1]
                        .as_str()
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(f64::NAN),
                )
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// GET `url`: status and body, or `None` when nothing answers.
pub fn get(url: &str) -> Option<(u16, String)> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let mut resp = agent.get(url).call().ok()?;
    let code = resp.status().as_u16();
    let body = resp.body_mut().read_to_string().ok()?;
    Some((code, body))
}

fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| PathBuf::from(d).join(name))
        .find(|p| p.is_file())
}
