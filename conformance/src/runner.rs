//! Loading vector files, running them, expected failures, and the report.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::model::Obj;
use crate::{frames, rejections, sessions};

/// The directory of the vectors shipped with this crate.
pub fn default_vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("vectors")
}

/// The expected-failures file shipped with this crate.
pub fn default_expected_failures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("expected-failures.json")
}

/// One loaded vector file.
pub struct VectorFile {
    /// Where it came from.
    pub path: PathBuf,
    /// Its JSON.
    pub doc: Value,
}

impl VectorFile {
    /// `frames`, `rejections` or `sessions`.
    pub fn kind(&self) -> &str {
        self.doc["kind"].as_str().unwrap_or("?")
    }

    /// Its tests.
    pub fn tests(&self) -> &[Value] {
        self.doc["tests"].as_array().map_or(&[], Vec::as_slice)
    }
}

/// The supported `schema_version`.
pub const SCHEMA_VERSION: u64 = 1;

/// Loads the `.json` vector files at `paths` (files, or folders searched recursively), in
/// path order.
pub fn load(paths: &[PathBuf]) -> Result<Vec<VectorFile>, String> {
    let mut files = Vec::new();
    for p in paths {
        collect(p, &mut files)?;
    }
    files.sort();
    files.dedup();
    let mut out = Vec::new();
    for path in files {
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let doc: Value =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        if doc["suite"].as_str() != Some("asp-conformance") {
            return Err(format!("{}: not an asp-conformance file", path.display()));
        }
        if doc["schema_version"].as_u64() != Some(SCHEMA_VERSION) {
            return Err(format!(
                "{}: schema_version {} (this runner reads {SCHEMA_VERSION})",
                path.display(),
                doc["schema_version"]
            ));
        }
        out.push(VectorFile { path, doc });
    }
    Ok(out)
}

fn collect(p: &Path, out: &mut Vec<PathBuf>) -> Result<(), String> {
    let md = std::fs::metadata(p).map_err(|e| format!("{}: {e}", p.display()))?;
    if md.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
            .map_err(|e| format!("{}: {e}", p.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for e in entries {
            if e.is_dir() || e.extension().is_some_and(|x| x == "json") {
                collect(&e, out)?;
            }
        }
    } else {
        out.push(p.to_path_buf());
    }
    Ok(())
}

/// Vector ids (or `prefix*` globs) expected to fail, with the reason (BoGo style).
#[derive(Default, Debug)]
pub struct ExpectedFailures(BTreeMap<String, String>);

impl ExpectedFailures {
    /// Reads `{"id": "reason"}`; a missing file is an empty list.
    pub fn load(path: &Path) -> Result<ExpectedFailures, String> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let v: Value =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut m = BTreeMap::new();
        for (k, r) in v.as_object().ok_or("expected-failures: not an object")? {
            if k.starts_with('_') {
                continue; // comments
            }
            m.insert(k.clone(), r.as_str().unwrap_or("").to_owned());
        }
        Ok(ExpectedFailures(m))
    }

    /// The reason `id` is expected to fail, if it is.
    pub fn reason(&self, id: &str) -> Option<&str> {
        self.0.iter().find_map(|(k, r)| {
            let hit = match k.strip_suffix('*') {
                Some(prefix) => id.starts_with(prefix),
                None => k == id,
            };
            hit.then_some(r.as_str())
        })
    }
}

/// Counts of one run.
#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Passed (including expected failures that passed).
    pub passed: usize,
    /// Failed and not expected to.
    pub failed: usize,
    /// Failed as expected.
    pub expected_failures: usize,
    /// Listed as expected failures but passed.
    pub unexpected_passes: usize,
}

impl Summary {
    /// Adds one result and prints its line.
    pub fn record(
        &mut self,
        out: &mut dyn Write,
        kind: &str,
        id: &str,
        result: Result<(), String>,
        xfail: Option<&str>,
    ) {
        let line = match (result, xfail) {
            (Ok(()), None) => {
                self.passed += 1;
                format!("ok         {kind:<10} {id}")
            }
            (Ok(()), Some(_)) => {
                self.passed += 1;
                self.unexpected_passes += 1;
                format!("XPASS      {kind:<10} {id}: listed in expected-failures.json but passes; remove it")
            }
            (Err(e), None) => {
                self.failed += 1;
                format!("FAIL       {kind:<10} {id}: {e}")
            }
            (Err(e), Some(r)) => {
                self.expected_failures += 1;
                format!("xfail      {kind:<10} {id}: expected failure ({r}): {e}")
            }
        };
        let _ = writeln!(out, "{line}");
    }

    /// The last lines of the report; the very last is exactly `N passed, N failed`.
    pub fn finish(&self, out: &mut dyn Write) {
        if self.expected_failures + self.unexpected_passes > 0 {
            let _ = writeln!(
                out,
                "({} expected failures, {} unexpected passes; see expected-failures.json)",
                self.expected_failures, self.unexpected_passes
            );
        }
        let _ = writeln!(out, "{} passed, {} failed", self.passed, self.failed);
    }
}

/// Runs every vector of `files` in process against `asp-proto`.
pub fn run_files(files: &[VectorFile], xf: &ExpectedFailures, out: &mut dyn Write) -> Summary {
    let mut sum = Summary::default();
    for f in files {
        let kind = f.kind().to_owned();
        let empty = Obj::new();
        for t in f.tests() {
            let id = t["id"].as_str().unwrap_or("?");
            let run = || match kind.as_str() {
                "frames" => frames::run(t),
                "rejections" => {
                    let cx = rejections::Context {
                        config: f.doc["config"].as_object().unwrap_or(&empty),
                        handshake: f.doc["handshake"].as_object().unwrap_or(&empty),
                    };
                    rejections::run(t, &cx)
                }
                "sessions" => sessions::run(t),
                other => Err(format!("{}: unknown kind {other:?}", f.path.display())),
            };
            // A panic (in the implementation or the runner) fails this vector only.
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(run))
                .unwrap_or_else(|p| Err(format!("panicked: {}", panic_text(&*p))));
            sum.record(out, &kind, id, r, xf.reason(id));
        }
    }
    sum
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(non-string payload)".into())
}
