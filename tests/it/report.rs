//! `msh report`, `msh ui` and `msh status --watch` on real runs, checked in a real browser
//! (headless Chromium, installed by `.ci/run`) and by HTML Tidy.

use crate::common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{TempDir, json, mnist1d_workflow, msh, run, start};
use serde_json::Value;

fn chromium() -> &'static str {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|c| Command::new(c).arg("--version").output().is_ok_and(|o| o.status.success()))
        .expect("a Chromium browser (bash .ci/run installs Debian's chromium)")
}

/// The page as a browser holds it after its scripts ran (at most `budget_ms` of virtual
/// time, waiting for the network while requests are open).
fn browse(url: &str, budget_ms: u64, limit: Duration) -> String {
    let profile = TempDir::new();
    let mut child = Command::new(chromium())
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-dev-shm-usage"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--virtual-time-budget={budget_ms}"))
        .args(["--dump-dom", url])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromium starts");
    // Read while it runs: a large page fills the pipe before chromium exits.
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut dom = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut dom).unwrap();
        dom
    });
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("chromium did not finish {url} within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let dom = reader.join().unwrap();
    assert!(dom.contains("</html>"), "chromium printed no page for {url}: {dom}");
    dom
}

/// The text of `<section id="ID">` in a page.
fn section<'a>(page: &'a str, id: &str) -> &'a str {
    let start = page.find(&format!("<section id=\"{id}\">")).unwrap_or_else(|| panic!("no section {id}"));
    let end = page[start..].find("</section>").unwrap();
    &page[start..start + end]
}

/// Marks of class `class` (first class of the element) in a piece of a page.
fn marks(piece: &str, class: &str) -> usize {
    piece.matches(&format!("class=\"{class} ")).count() + piece.matches(&format!("class=\"{class}\"")).count()
}

fn tidy(file: &Path) {
    let out = Command::new("tidy").args(["-q", "-e"]).arg(file).output().expect("HTML Tidy (installed by .ci/run)");
    // 0: valid; 1: warnings only; 2: errors.
    assert!(out.status.code().is_some_and(|c| c < 2), "tidy found errors:\n{}", String::from_utf8_lossy(&out.stderr));
}

fn finished(all: &[Value], stage: &str) -> usize {
    all.iter().filter(|t| t["stage"] == stage && !matches!(t["status"].as_str(), Some("pending" | "running"))).count()
}

#[test]
fn the_report_is_one_valid_page_with_a_mark_per_trial_in_the_browser() {
    let stages = "  ensemble: {kind: ensemble, needs: [search], method: learned, top_k: 3}\n  \
                  retrain: {kind: retrain, needs: [search], epochs: 1}\n";
    let text = mnist1d_workflow(8, 2, 2, stages) + "weight_sharing: {mode: snapshot}\n";
    let (dir, workflow, run_dir) = start(&text);
    let out = run(&["run", workflow.to_str().unwrap(), "--run-dir", run_dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let file = dir.path().join("report.html");
    let printed = run(&["report", run_dir.to_str().unwrap(), "-o", file.to_str().unwrap()]);
    assert!(printed.status.success(), "{}", String::from_utf8_lossy(&printed.stderr));
    let html = std::fs::read_to_string(&file).unwrap();
    // Self-contained: nothing is fetched.
    for outside in ["src=\"http", "href=\"http", "<link", "@import"] {
        assert!(!html.contains(outside), "the report refers outside itself: {outside}");
    }
    tidy(&file);
    let all = json(&["trials", run_dir.to_str().unwrap(), "--json"]).as_array().unwrap().clone();
    let dom = browse(&format!("file://{}", file.display()), 2000, Duration::from_secs(60));
    assert_eq!(marks(section(&dom, "objective"), "trial"), finished(&all, "search"), "one mark per search trial");
    assert_eq!(marks(section(&dom, "lineage"), "node"), finished(&all, "search"));
    assert_eq!(marks(section(&dom, "timeline"), "span"), all.len(), "a bar per trial, ensembles and retrains too");
    assert_eq!(section(&dom, "trials-section").matches("<tr data-id=").count(), all.len());
    assert!(section(&dom, "ensembles").contains("learned") || section(&dom, "ensembles").contains("<table>"));
    assert!(section(&dom, "refinements").contains("retrain"));
    assert!(section(&dom, "architecture").contains("class=\"block\""));
    assert!(section(&dom, "workflow").contains("weight_sharing"));
}

#[test]
fn the_report_draws_table_runs_and_failed_trials() {
    let dir = TempDir::new();
    let mut table = String::from("arch,accuracy\n");
    for (i, x) in ["a", "b", "c"].iter().enumerate() {
        table.push_str(&format!("{x},0.{}\n", 5 + i));
    }
    std::fs::write(dir.path().join("table.csv"), table).unwrap();
    std::fs::write(dir.path().join("data.csv"), "label,x\n0,1\n1,2\n").unwrap();
    // `d` is not in the table: its trials fail.
    let workflow = "name: table\ndata: {source: 'csv:data.csv'}\nspace: {packs: [], blocks: [a, b, c, d], min_depth: 1, max_depth: 1}\n\
                    searcher: {plugin: grid-search}\ntrainers: {kind: table, table: table.csv}\nbudget: {trials: 4}\n\
                    stages: {search: {kind: search}}\n";
    std::fs::write(dir.path().join("w.yaml"), workflow).unwrap();
    let run_dir = dir.path().join("run");
    let out = run(&["run", dir.path().join("w.yaml").to_str().unwrap(), "--run-dir", run_dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = run(&["report", run_dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let file = run_dir.join("report.html");
    tidy(&file);
    let html = std::fs::read_to_string(&file).unwrap();
    let objective = section(&html, "objective");
    assert_eq!(marks(objective, "trial"), 4);
    assert_eq!(objective.matches("class=\"trial failed\"").count(), 1, "{objective}");
}

#[test]
fn the_learning_curves_show_every_trial_where_it_stopped_and_the_rungs() {
    let early = "early_stopping: {mode: asha, grace_epochs: 1, reduction_factor: 2, min_trials: 2}\n";
    let text = mnist1d_workflow(6, 4, 1, "").replace("learning_rate: 0.003", "learning_rate: 0.01") + early;
    let (_dir, workflow, run_dir) = start(&text);
    let out = run(&["run", workflow.to_str().unwrap(), "--run-dir", run_dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(run(&["report", run_dir.to_str().unwrap()]).status.success());
    let html = std::fs::read_to_string(run_dir.join("report.html")).unwrap();
    let curves = section(&html, "curves");
    let all = json(&["trials", run_dir.to_str().unwrap(), "--json"]).as_array().unwrap().clone();
    let stopped = all.iter().filter(|t| t["status"] == "stopped").count();
    assert!(stopped > 0, "halving at epochs 1, 2 and 4 stops someone");
    assert_eq!(marks(curves, "curve"), finished(&all, "search"), "a curve per trial");
    assert_eq!(curves.matches("class=\"curve best\"").count(), 1, "{curves}");
    assert_eq!(marks(curves, "trial"), stopped, "a mark where each stopped trial stopped");
    assert_eq!(marks(curves, "rung"), 3, "rungs at epochs 1, 2 and 4: {curves}");
    assert!(curves.contains("rungs (asha): epochs 1, 2, 4"), "{curves}");
}

/// Follows a line of `child`'s stdout until it holds `needle`.
fn read_until(child: &mut Child, needle: &str) -> String {
    let stdout = child.stdout.as_mut().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    loop {
        let line = lines.next().expect("the process printed its address").unwrap();
        if line.contains(needle) {
            return line;
        }
    }
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_live_page_shows_trials_that_finish_after_it_opened() {
    let (_dir, workflow, run_dir) = start(&mnist1d_workflow(10, 3, 1, ""));
    let run_text = run_dir.to_str().unwrap();
    let _search = Killed(
        msh().args(["run", workflow.to_str().unwrap(), "--run-dir", run_text]).stderr(Stdio::null()).spawn().unwrap(),
    );
    // Once a trial has finished, open the dashboard.
    let started = Instant::now();
    let opened_with = loop {
        let out = msh().args(["trials", run_text, "--json"]).output().unwrap();
        if let Ok(all) = serde_json::from_slice::<Vec<Value>>(&out.stdout) {
            let done = finished(&all, "search");
            if done >= 1 {
                break done;
            }
        }
        assert!(started.elapsed() < Duration::from_secs(120), "no trial finished");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(opened_with < 10, "the run must still be going");
    let mut ui = Killed(msh().args(["ui", run_text, "--port", "0"]).stdout(Stdio::piped()).spawn().unwrap());
    let line = read_until(&mut ui.0, "http://");
    let url = line[line.find("http://").unwrap()..].split_whitespace().next().unwrap().to_string();

    // A second dashboard on the same port is refused.
    let port = url.trim_end_matches('/').rsplit(':').next().unwrap();
    let taken = run(&["ui", run_text, "--port", port]);
    assert!(!taken.status.success());
    assert!(String::from_utf8_lossy(&taken.stderr).contains("is taken"), "{}", String::from_utf8_lossy(&taken.stderr));

    // The page long-polls until the run ends; the browser waits on open requests.
    let dom = browse(&url, 600_000, Duration::from_secs(300));
    let shown = marks(section(&dom, "objective"), "trial");
    assert!(shown > opened_with, "the page opened with {opened_with} finished trials and shows {shown}");
    assert_eq!(shown, 10, "every trial, once the run ended");
    assert!(dom.contains("data-finished=\"10\""), "the page followed the run to its end");

    // A trial's details.
    let id = json(&["trials", run_text, "--json"])[0]["id"].as_u64().unwrap();
    let detail = browse(&format!("{url}trial/{id}"), 100, Duration::from_secs(60));
    assert!(detail.contains(&format!("Trial {id}")) && detail.contains("architecture"), "{detail}");
}

#[test]
fn status_watch_redraws_until_the_run_ends() {
    let (_dir, workflow, run_dir) = start(&mnist1d_workflow(4, 1, 1, ""));
    let run_text = run_dir.to_str().unwrap();
    let mut search = Killed(
        msh().args(["run", workflow.to_str().unwrap(), "--run-dir", run_text]).stderr(Stdio::null()).spawn().unwrap(),
    );
    let started = Instant::now();
    while !run_dir.join("store/data.mdb").exists() {
        assert!(started.elapsed() < Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = msh().args(["status", run_text, "--watch", "--interval", "0.2"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(search.0.wait().unwrap().success());
    let text = String::from_utf8_lossy(&out.stdout);
    // Into a pipe, frames are pages after form feeds, with no terminal codes.
    assert!(!text.contains('\x1b'), "terminal codes in a pipe: {text:?}");
    let frames = text.matches('\x0c').count();
    assert!(frames >= 2, "redrawn while the run went on: {frames} frame(s)");
    let last = text.rsplit('\x0c').next().unwrap();
    assert!(last.contains("search") && last.contains("done") && last.contains("completed 4"), "{last}");
}

/// The status line of a raw HTTP/1.1 GET to `port` with these headers.
fn status_of(port: u16, path: &str, headers: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\n{headers}Connection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response.lines().next().unwrap_or_default().to_string()
}

#[test]
fn the_dashboard_answers_only_its_loopback_name_and_its_own_pages() {
    let (_dir, workflow, run_dir) = start(&mnist1d_workflow(1, 1, 1, ""));
    let run_text = run_dir.to_str().unwrap();
    let out = run(&["run", workflow.to_str().unwrap(), "--run-dir", run_text]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut ui = Killed(msh().args(["ui", run_text, "--port", "0"]).stdout(Stdio::piped()).spawn().unwrap());
    let line = read_until(&mut ui.0, "http://");
    let url = line[line.find("http://").unwrap()..].split_whitespace().next().unwrap();
    let port: u16 = url.trim_end_matches('/').rsplit(':').next().unwrap().parse().unwrap();
    let ok = |headers: &str| status_of(port, "/api/trials", headers);
    assert!(ok(&format!("Host: 127.0.0.1:{port}\r\n")).contains(" 200 "));
    assert!(ok(&format!("Host: localhost:{port}\r\nOrigin: http://localhost:{port}\r\n")).contains(" 200 "));
    // A rebound name (DNS rebinding), no name, another port's name, another site's page.
    assert!(ok(&format!("Host: attacker.example:{port}\r\n")).contains(" 421 "));
    assert!(!ok("").contains(" 200 "));
    assert!(ok("Host: 127.0.0.1:1\r\n").contains(" 421 "));
    let cross = ok(&format!("Host: 127.0.0.1:{port}\r\nOrigin: http://attacker.example\r\n"));
    assert!(cross.contains(" 403 "), "{cross}");
}

/// A table-trainer run of `trials` trials over eight blocks at depths 1-5 (37,448
/// architectures, each with its own accuracy; twelve blocks, 271,452, past 30,000 trials),
/// run by `msh run`.
fn table_run(trials: u32) -> (TempDir, std::path::PathBuf) {
    let dir = TempDir::new();
    let blocks: Vec<String> = (0..if trials > 30_000 { 12 } else { 8 }).map(|i| format!("b{i}")).collect();
    let mut table = String::from("arch,accuracy,params\n");
    let mut level = vec![String::new()];
    let mut row = 0usize;
    for _ in 0..5 {
        level = level
            .iter()
            .flat_map(|p| blocks.iter().map(move |b| format!("{p}{}{b}", if p.is_empty() { "" } else { "," })))
            .collect();
        for arch in &level {
            let accuracy = 0.5 + 0.45 * ((row * 7919) % 1000) as f64 / 1000.0;
            table.push_str(&format!("\"{arch}\",{accuracy:.4},{}\n", 1000 * (arch.matches(',').count() + 1)));
            row += 1;
        }
    }
    std::fs::write(dir.path().join("table.csv"), table).unwrap();
    std::fs::write(dir.path().join("data.csv"), "label,x\n0,1\n1,2\n").unwrap();
    let workflow = format!(
        "name: table\ndata: {{source: 'csv:data.csv'}}\nspace: {{packs: [], blocks: [{}], min_depth: 1, max_depth: 5}}\n\
         searcher: {{plugin: random-search}}\ntrainers: {{kind: table, table: table.csv}}\nbudget: {{trials: {trials}}}\n\
         stages: {{search: {{kind: search}}}}\n",
        blocks.join(", ")
    );
    std::fs::write(dir.path().join("w.yaml"), workflow).unwrap();
    let run_dir = dir.path().join("run");
    let out = run(&["run", dir.path().join("w.yaml").to_str().unwrap(), "--run-dir", run_dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    (dir, run_dir)
}

/// The ids of the trial table's rows as the browser shows them, in order.
fn table_ids(dom: &str) -> Vec<u64> {
    let table = section(dom, "trials-section");
    table.split("<tr data-id=\"").skip(1).map(|rest| rest[..rest.find('"').unwrap()].parse().unwrap()).collect()
}

/// 20,000 trials in CI; `MSH_TEST_REPORT_TRIALS=100000` checks the size `msh bench views` times.
#[test]
fn a_report_of_20000_trials_opens_pages_and_sorts_in_the_browser() {
    let trials: u64 = std::env::var("MSH_TEST_REPORT_TRIALS").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000);
    let (dir, run_dir) = table_run(trials as u32);
    let file = dir.path().join("report.html");
    let out = run(&["report", run_dir.to_str().unwrap(), "-o", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let size = std::fs::metadata(&file).unwrap().len();
    // About a hundred bytes a trial (its row in the table's JSON), plus the thinned plots.
    assert!(size < (2 << 20) + 120 * trials, "the page is {size} bytes");
    let all = json(&["trials", run_dir.to_str().unwrap(), "--json"]).as_array().unwrap().clone();
    assert_eq!(all.len() as u64, trials);
    let url = format!("file://{}", file.display());

    // It renders: thinned plots that say so, the table's first page of all the trials.
    let dom = browse(&url, 2000, Duration::from_secs(60));
    let objective = section(&dom, "objective");
    assert!(
        marks(objective, "trial") <= 3000 && objective.contains(&format!("of {trials} trials shown")),
        "{}",
        marks(objective, "trial")
    );
    assert!(section(&dom, "timeline").contains("time bins"));
    let first = table_ids(&dom);
    assert_eq!(first, (0..100).collect::<Vec<u64>>(), "page 1 is the first 100 trials by id");
    assert!(dom.contains(&format!("trials 1-100 of {trials} (page 1 of {})", trials / 100)));

    // The table pages: page 3 shows the next rows.
    let third = table_ids(&browse(&format!("{url}#page=3"), 2000, Duration::from_secs(60)));
    assert_eq!(third, (200..300).collect::<Vec<u64>>());

    // Sorting orders every trial, not the page: the first row has the lowest objective.
    let sorted = table_ids(&browse(&format!("{url}#sort=objective&order=asc"), 2000, Duration::from_secs(60)));
    let objective_of = |id: u64| all[id as usize]["objective"].as_f64().unwrap();
    let lowest = all.iter().filter_map(|t| t["objective"].as_f64()).fold(f64::INFINITY, f64::min);
    assert_eq!(sorted.len(), 100);
    assert_eq!(objective_of(sorted[0]), lowest);
    assert!(sorted.windows(2).all(|w| objective_of(w[0]) <= objective_of(w[1])), "sorted within the page too");
    let highest = all.iter().filter_map(|t| t["objective"].as_f64()).fold(f64::NEG_INFINITY, f64::max);
    let reverse = table_ids(&browse(&format!("{url}#sort=objective&order=desc"), 2000, Duration::from_secs(60)));
    assert_eq!(objective_of(reverse[0]), highest);
}

#[test]
fn a_trial_whose_worker_vanished_is_stale_not_failed_in_every_view() {
    use msh_store::{Owner, Store, StoreError, TrialRecord, TrialStatus};
    let (_dir, run_dir) = table_run(5);
    let run_text = run_dir.to_str().unwrap();
    // A worker claimed a trial and vanished: its lease ran out a minute ago.
    let store = Store::open(&run_dir).unwrap();
    let id = store
        .write(|t| -> Result<u64, StoreError> {
            let mut stage = t.known_stage("search")?;
            let id = t.next_trial_id()?;
            let mut trial = TrialRecord::new(id, "search", vec![], vec![]);
            trial.status = TrialStatus::Running;
            trial.owner = Some(Owner { lease_until: t.clock() - 60.0, ..Owner::this_process(7) });
            trial.worker = Some("gone-host pid 4242 trainer 0".into());
            trial.started = Some(t.clock() - 120.0);
            trial.attempts = 1;
            stage.running += 1;
            stage.in_flight.push(id);
            t.put_trial(&trial)?;
            t.put_stage(&stage)?;
            Ok(id)
        })
        .unwrap();
    drop(store);

    let status = json(&["status", run_text, "--json"]);
    assert_eq!(status["trials"]["stale"], 1, "{status}");
    assert_eq!(status["trials"]["running"], 0, "{status}");
    assert_eq!(status["trials"]["failed"], 0, "{status}");
    assert_eq!(status["stale"][0]["worker"], "gone-host pid 4242 trainer 0", "{status}");
    assert_eq!(status["stale"][0]["reason"], "lease expired", "{status}");
    let text = String::from_utf8(run(&["status", run_text]).stdout).unwrap();
    assert!(
        text.contains(&format!("stale      trial {id}: gone-host pid 4242 trainer 0 is gone (lease expired")),
        "{text}"
    );

    let all = json(&["trials", run_text, "--json"]);
    let stale = all.as_array().unwrap().iter().find(|t| t["id"] == id).unwrap();
    assert_eq!(stale["status"], "running", "the record stays running until it is requeued");
    assert_eq!(stale["stale"]["worker"], "gone-host pid 4242 trainer 0");
    assert!(all[0].get("stale").is_none());
    let text = String::from_utf8(run(&["trials", run_text]).stdout).unwrap();
    let line = text.lines().find(|l| l.trim_start().starts_with(&format!("{id} "))).unwrap();
    assert!(line.contains(" stale ") && line.contains("gone-host pid 4242 trainer 0 is gone"), "{line}");

    let out = run(&["report", run_text]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let html = std::fs::read_to_string(run_dir.join("report.html")).unwrap();
    assert!(html.contains("stale 1 (their worker is gone)") && html.contains("running 0"), "counts");
    assert!(
        html.contains(&format!("<tr data-id=\"{id}\" class=\"stale\" title=\"gone-host pid 4242 trainer 0 is gone"))
    );
    assert!(!html.contains("class=\"failed\""));

    // The dashboard says the same.
    let mut ui = Killed(msh().args(["ui", run_text, "--port", "0"]).stdout(Stdio::piped()).spawn().unwrap());
    let line = read_until(&mut ui.0, "http://");
    let url = line[line.find("http://").unwrap()..].split_whitespace().next().unwrap();
    let port: u16 = url.trim_end_matches('/').rsplit(':').next().unwrap().parse().unwrap();
    let page = get(port, "/");
    assert!(page.contains("stale 1 (their worker is gone)") && page.contains("class=\"stale\""), "{page}");
    let detail = get(port, &format!("/trial/{id}"));
    assert!(detail.contains("<dt>stale</dt>") && detail.contains("gone-host pid 4242"), "{detail}");
}

/// The body of a GET from the dashboard on `port`.
fn get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{}", response.lines().next().unwrap_or_default());
    response.split_once("\r\n\r\n").unwrap().1.to_string()
}

#[test]
fn the_dashboard_sends_only_the_trials_that_changed() {
    use msh_store::{Store, StoreError, TrialRecord, TrialStatus};
    let (_dir, run_dir) = table_run(5);
    let run_text = run_dir.to_str().unwrap();
    let mut ui = Killed(msh().args(["ui", run_text, "--port", "0"]).stdout(Stdio::piped()).spawn().unwrap());
    let line = read_until(&mut ui.0, "http://");
    let url = line[line.find("http://").unwrap()..].split_whitespace().next().unwrap();
    let port: u16 = url.trim_end_matches('/').rsplit(':').next().unwrap().parse().unwrap();
    let page = get(port, "/");
    let at = page.find("data-position=\"").unwrap() + "data-position=\"".len();
    let position: u64 = page[at..at + page[at..].find('"').unwrap()].parse().unwrap();
    assert_eq!(position, 5);

    // One more trial finishes (as a worker's would): the next poll brings it alone.
    let store = Store::open(&run_dir).unwrap();
    let id = store
        .write(|t| -> Result<u64, StoreError> {
            let id = t.next_trial_id()?;
            let mut trial = TrialRecord::new(id, "search", vec![], vec![]);
            trial.status = TrialStatus::Completed;
            trial.objective = Some(0.25);
            t.put_trial(&trial)?;
            Ok(id)
        })
        .unwrap();
    let update: Value = serde_json::from_str(&get(port, &format!("/api/wait?since={position}"))).unwrap();
    assert_eq!(update["position"], position + 1, "{update}");
    let rows = update["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "only the trial that changed: {update}");
    assert_eq!(rows[0][0], id);
    assert_eq!(rows[0][2], "completed");
    assert!(update["summary"].as_str().unwrap().contains("completed 6"), "{update}");
    // Nothing changed since: an ended run answers at once, with no rows.
    let update: Value = serde_json::from_str(&get(port, &format!("/api/wait?since={}", position + 1))).unwrap();
    assert_eq!((update["rows"].as_array().unwrap().len(), &update["ended"]), (0, &Value::Bool(true)), "{update}");
    // The page itself has it too, and the trial API pages.
    assert!(get(port, &format!("/trial/{id}")).contains(&format!("Trial {id}")));
    let window: Value = serde_json::from_str(&get(port, "/api/trials?offset=2&limit=3")).unwrap();
    let ids: Vec<u64> = window.as_array().unwrap().iter().map(|t| t["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, [2, 3, 4]);
}
