//! A real headless browser for tests: Debian's `chromium` driven by its
//! `chromedriver` over the W3C WebDriver protocol (plain HTTP + JSON).

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use crate::process::{Process, free_port, program, wait_for_port};

/// The WebDriver element key.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// How long a wait for an element or a text may take.
const WAIT: Duration = Duration::from_secs(15);

/// A browser session. Chromium exits with the session ([`Browser::quit`]);
/// if the test panics first, its processes are killed by id on drop.
pub struct Browser {
    http: reqwest::Client,
    session: String,
    profile: PathBuf,
    _driver: Process,
}

impl Browser {
    /// Starts chromedriver on a free port and a headless Chromium session
    /// with a profile under `dir`.
    pub async fn start(dir: &Path) -> Self {
        let port = free_port();
        let driver = Process::spawn(
            "chromedriver",
            program("chromedriver"),
            vec![format!("--port={port}")],
            Default::default(),
            dir,
        );
        wait_for_port(port, Duration::from_secs(20)).await;
        let profile = dir.join("chromium-profile");
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let created = answer(http.post(format!("{base}/session")).json(
            &json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": program("chromium"),
                    "args": [
                        "--headless=new", "--no-sandbox", "--disable-gpu",
                        "--disable-dev-shm-usage", "--window-size=1280,2400",
                        format!("--user-data-dir={}", profile.display()),
                    ],
                },
            }}}),
        ))
        .await;
        let session = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {created}\n{}", driver.logs()))
            .to_owned();
        Self {
            http,
            session: format!("{base}/session/{session}"),
            profile,
            _driver: driver,
        }
    }

    async fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.http.request(method, format!("{}{path}", self.session));
        if let Some(body) = body {
            request = request.json(&body);
        }
        answer(request).await["value"].clone()
    }

    pub async fn goto(&self, url: &str) {
        self.command(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    /// The first element matching `css`, waiting for it to appear.
    pub async fn find(&self, css: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let found = self
                .command(
                    reqwest::Method::POST,
                    "/element",
                    Some(json!({"using": "css selector", "value": css})),
                )
                .await;
            if let Some(id) = found[ELEMENT].as_str() {
                return id.to_owned();
            }
            assert!(Instant::now() < deadline, "no element {css}: {found}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn click(&self, css: &str) {
        let id = self.find(css).await;
        let done = self
            .command(
                reqwest::Method::POST,
                &format!("/element/{id}/click"),
                Some(json!({})),
            )
            .await;
        assert!(done.is_null(), "click {css}: {done}");
    }

    /// Replaces the text of the field `css` with `text`, by typing (select
    /// all, then type), so the page sees real input events.
    pub async fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css).await;
        let select_all = "\u{E009}a\u{E000}";
        let done = self
            .command(
                reqwest::Method::POST,
                &format!("/element/{id}/value"),
                Some(json!({"text": format!("{select_all}{text}")})),
            )
            .await;
        assert!(done.is_null(), "type into {css}: {done}");
    }

    /// The text of `css` once it satisfies `wanted`.
    pub async fn text_when(&self, css: &str, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let id = self.find(css).await;
            let text = self
                .command(reqwest::Method::GET, &format!("/element/{id}/text"), None)
                .await;
            let text = text.as_str().unwrap_or_default().to_owned();
            if wanted(&text) {
                return text;
            }
            assert!(Instant::now() < deadline, "{css} never fit: last {text:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Ends the session; Chromium exits.
    pub async fn quit(self) {
        self.command(reqwest::Method::DELETE, "", None).await;
    }
}

/// chromedriver's JSON answer to `request`.
async fn answer(request: reqwest::RequestBuilder) -> Value {
    request
        .send()
        .await
        .expect("chromedriver answers")
        .json()
        .await
        .expect("JSON")
}

impl Drop for Browser {
    /// Chromium's processes (found by their profile directory, which only
    /// this browser uses) are killed by id, in case the session was not ended.
    fn drop(&mut self) {
        let marker = format!("--user-data-dir={}", self.profile.display());
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return;
        };
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|p| p.parse::<i32>().ok())
            else {
                continue;
            };
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&marker) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}
