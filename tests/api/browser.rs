//! Runs the real-browser tests (`tests/browser/run.mjs`: Chromium through playwright-core,
//! against the `footfall` binary cargo just built) as part of `cargo test`.
//!
//! It needs Chromium, node and `tests/browser/node_modules` (`scripts/browser-setup.sh`
//! installs them), so it is ignored by a plain `cargo test`; `cargo test -- --include-ignored`
//! (what CI runs) runs it, and fails, saying what is missing, without them.

use std::path::Path;
use std::process::Command;

const CHROMIUM: &str = "/usr/bin/chromium";

/// What the browser tests need that is missing, in words.
fn missing_tools(root: &Path) -> Vec<String> {
    let mut missing = Vec::new();
    if !Path::new(CHROMIUM).exists() {
        missing.push(format!("{CHROMIUM} (apt-get install -y chromium)"));
    }
    if Command::new("node").arg("--version").output().is_err() {
        missing.push("node".to_owned());
    }
    if !root
        .join("tests/browser/node_modules/playwright-core")
        .is_dir()
    {
        missing.push("tests/browser/node_modules (npm ci --prefix tests/browser)".to_owned());
    }
    missing
}

#[test]
#[ignore = "needs Chromium (scripts/browser-setup.sh)"]
fn the_tracker_pixel_and_dashboard_work_in_a_real_browser() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let missing = missing_tools(root);
    assert!(
        missing.is_empty(),
        "browser tests need {}; scripts/browser-setup.sh installs them",
        missing.join(", ")
    );
    // The committed screenshot is refreshed by running run.mjs by hand, not by every test run.
    let chosen = std::env::var_os("FOOTFALL_SCREENSHOT");
    let screenshot = chosen.clone().unwrap_or_else(|| {
        std::env::temp_dir()
            .join(format!("footfall-dashboard-{}.png", std::process::id()))
            .into()
    });
    let output = Command::new("node")
        .arg(root.join("tests/browser/run.mjs"))
        .current_dir(root)
        .env("FOOTFALL_BIN", env!("CARGO_BIN_EXE_footfall"))
        .env("FOOTFALL_SCREENSHOT", &screenshot)
        .env("CHROMIUM", CHROMIUM)
        .output()
        .expect("node runs");
    if chosen.is_none() {
        let _ = std::fs::remove_file(&screenshot);
    }
    // Printed through the test harness, so `cargo test` shows it on failure (or --nocapture).
    let stdout = String::from_utf8_lossy(&output.stdout);
    print!("{stdout}");
    eprint!("{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        output.status.success(),
        "browser tests failed ({}); output above",
        output.status
    );
    let last = stdout.lines().last().unwrap_or_default();
    assert!(
        last.ends_with(" passed, 0 failed"),
        "unexpected summary: {last}"
    );
}
