//! Headless Chromium, driven over the DevTools protocol on a loopback
//! WebSocket: open a page, evaluate JavaScript in it, take a screenshot.
//! Only the browser and pages on loopback are involved; the flags keep
//! Chromium from calling out anywhere else.

use std::path::Path;
use std::process::Stdio;

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::harness::PATIENCE;

/// The browser the tests run; `CHROMIUM` overrides the name on `PATH`.
fn program() -> String {
    std::env::var("CHROMIUM").unwrap_or_else(|_| "chromium".to_owned())
}

pub struct Browser {
    /// Killed when the test ends, however it ends.
    _process: Child,
    /// Its profile, removed with it.
    _profile: tempfile::TempDir,
    devtools: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    /// The page's DevTools session, once one is open.
    session: Option<String>,
}

impl Browser {
    /// Starts Chromium, failing the test with a clear message if it is not
    /// installed (`.ci/run` installs it).
    pub async fn launch() -> Browser {
        let profile = tempfile::tempdir().expect("temporary profile");
        let mut process = Command::new(program())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-breakpad",
                "--disable-domain-reliability",
                "--no-pings",
                // Every name but the loopback address fails to resolve, so
                // the browser can reach nothing beyond this machine by name.
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                "--window-size=1280,800",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "cannot start `{}` ({error}): the live-page test needs Chromium; \
                     install it (`apt-get install -y chromium`, as .ci/run does) or set \
                     CHROMIUM to its path",
                    program()
                )
            });

        // Chromium names its DevTools endpoint on stderr; the rest of
        // stderr is drained so the browser never blocks on a full pipe.
        let stderr = process.stderr.take().expect("stderr is piped");
        let mut lines = BufReader::new(stderr).lines();
        let endpoint = tokio::time::timeout(PATIENCE, async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some((_, url)) = line.split_once("DevTools listening on ") {
                    return Some(url.trim().to_owned());
                }
            }
            None
        })
        .await
        .expect("Chromium announced its DevTools endpoint in time")
        .expect("Chromium started and announced its DevTools endpoint");
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        assert!(
            endpoint.starts_with("ws://127.0.0.1:"),
            "DevTools must listen on loopback, not {endpoint}"
        );

        let (devtools, _) = tokio_tungstenite::connect_async(&endpoint)
            .await
            .expect("DevTools accepts");
        Browser {
            _process: process,
            _profile: profile,
            devtools,
            next_id: 0,
            session: None,
        }
    }

    /// Opens `url` in a new tab and attaches to it.
    pub async fn open(&mut self, url: &str) {
        let target = self
            .call("Target.createTarget", json!({ "url": url }))
            .await;
        let target_id = target["targetId"].as_str().expect("a target id").to_owned();
        let attached = self
            .call(
                "Target.attachToTarget",
                json!({ "targetId": target_id, "flatten": true }),
            )
            .await;
        let session = attached["sessionId"].as_str().expect("a session id");
        self.session = Some(session.to_owned());
    }

    /// The value of a JavaScript expression in the open page.
    pub async fn evaluate(&mut self, expression: &str) -> Value {
        self.try_evaluate(expression)
            .await
            .unwrap_or_else(|error| panic!("{expression} threw: {error}"))
    }

    /// The value of a JavaScript expression, or what it threw.
    async fn try_evaluate(&mut self, expression: &str) -> Result<Value, Value> {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true }),
            )
            .await;
        match result.get("exceptionDetails") {
            Some(thrown) => Err(thrown.clone()),
            None => Ok(result["result"]["value"].clone()),
        }
    }

    /// Evaluates `expression` until it yields `true`, failing the test with
    /// `what` after `PATIENCE`. Until then a throw counts as "not yet": the
    /// page may still be loading.
    pub async fn wait_for(&mut self, what: &str, expression: &str) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let last = self.try_evaluate(expression).await;
            if last == Ok(Value::Bool(true)) {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                let text = self
                    .try_evaluate("document.body ? document.body.innerText : ''")
                    .await;
                panic!("the page never showed {what} (last: {last:?}); it shows:\n{text:?}");
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Saves a PNG of the open page.
    pub async fn screenshot(&mut self, path: &Path) {
        let shot = self
            .call("Page.captureScreenshot", json!({ "format": "png" }))
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("image data"))
            .expect("image data is base64");
        std::fs::create_dir_all(path.parent().expect("a directory")).expect("artifact dir");
        std::fs::write(path, png).expect("screenshot written");
    }

    /// Sends one DevTools command and returns its result, skipping the
    /// events that arrive meanwhile.
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut command = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = &self.session {
            command["sessionId"] = json!(session);
        }
        self.devtools
            .send(Message::Text(command.to_string().into()))
            .await
            .expect("DevTools command sent");
        loop {
            let next = tokio::time::timeout(PATIENCE, self.devtools.next())
                .await
                .unwrap_or_else(|_| panic!("DevTools answered {method} in time"));
            let Some(Ok(Message::Text(text))) = next else {
                assert!(matches!(next, Some(Ok(_))), "DevTools connection ended");
                continue;
            };
            let answer: Value = serde_json::from_str(text.as_str()).expect("DevTools JSON");
            if answer["id"] != json!(id) {
                continue;
            }
            if let Some(error) = answer.get("error") {
                panic!("DevTools refused {method}: {error}");
            }
            return answer["result"].clone();
        }
    }
}
