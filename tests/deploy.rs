//! The deployment files: the Kubernetes manifests validate against
//! Kubernetes' own schemas (kubernetes-validate, installed by tests/run),
//! the CronJob's arguments are flags kubeanon accepts, and the Dockerfile
//! is the two-stage, non-root build the README describes. No container
//! engine runs here, so the image itself is not built by the tests.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::*;

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The CronJob container's `args:` list.
fn cronjob_args() -> Vec<String> {
    let yaml = read("examples/deploy/cronjob.yaml");
    let mut lines = yaml.lines().skip_while(|l| l.trim() != "args:").skip(1);
    let mut args = Vec::new();
    for l in lines.by_ref() {
        match l.trim().strip_prefix("- ") {
            Some(arg) => args.push(arg.to_string()),
            None => break,
        }
    }
    assert!(!args.is_empty(), "no args in the CronJob");
    args
}

#[test]
fn the_manifests_validate_against_the_kubernetes_schemas() {
    let validate = Path::new(&python()).with_file_name("kubernetes-validate");
    // The sharded CronJob also against 1.30, the oldest Kubernetes it is
    // written for (backoffLimitPerIndex).
    for (manifest, version) in [
        ("examples/deploy/cronjob.yaml", None),
        ("examples/deploy/cronjob-sharded.yaml", None),
        ("examples/deploy/cronjob-sharded.yaml", Some("1.30.0")),
    ] {
        let mut cmd = Command::new(&validate);
        cmd.args(["--strict", "--quiet"]);
        if let Some(v) = version {
            cmd.args(["-k", v]);
        }
        let out = cmd
            .arg(repo(manifest))
            .output()
            .unwrap_or_else(|e| panic!("{}: {e} (tests/run installs it)", validate.display()));
        assert!(
            out.status.success(),
            "{manifest}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The documents of a YAML file, as JSON (PyYAML, installed with
/// kubernetes-validate).
fn yaml_documents(path: &str) -> Vec<serde_json::Value> {
    let out = Command::new(python())
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))",
        ])
        .arg(repo(path))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The Kubernetes manifests shipped in examples/deploy/.
fn manifests() -> Vec<String> {
    let mut found: Vec<String> = std::fs::read_dir(repo("examples/deploy"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".yaml") || n.ends_with(".yml"))
        .map(|n| format!("examples/deploy/{n}"))
        .collect();
    found.sort();
    found
}

#[test]
fn every_namespace_a_manifest_uses_is_created_by_the_manifest_itself() {
    // `kubectl apply -f FILE` on a fresh cluster: each file creates the
    // namespaces its objects live in, before them (kubectl applies the
    // documents in order).
    let files = manifests();
    assert!(files.len() >= 2, "{files:?}");
    for file in &files {
        let mut created: Vec<String> = Vec::new();
        let mut used = 0;
        for doc in yaml_documents(file) {
            if doc.is_null() {
                continue;
            }
            if doc["kind"] == "Namespace" {
                created.push(doc["metadata"]["name"].as_str().unwrap().to_string());
            }
            if let Some(ns) = doc["metadata"]["namespace"].as_str() {
                used += 1;
                assert!(
                    created.iter().any(|c| c == ns),
                    "{file}: {} {} is in namespace {ns}, which no document before it creates",
                    doc["kind"],
                    doc["metadata"]["name"]
                );
            }
        }
        assert!(used > 0, "{file}: no namespaced object");
    }
}

/// The systemd unit's `KEY=value` settings, and the commented-out ones
/// (`#KEY=value`) its comments offer.
fn unit_settings(path: &str) -> Vec<(bool, String, String)> {
    let unit = read(path).replace("\\\n", " ");
    unit.lines()
        .filter_map(|l| {
            let (on, l) = match l.strip_prefix('#') {
                Some(rest) => (false, rest),
                None => (true, l),
            };
            let (k, v) = l.split_once('=')?;
            let key_like = !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric());
            key_like.then(|| (on, k.to_string(), v.trim().to_string()))
        })
        .collect()
}

#[test]
fn the_systemd_unit_runs_the_installed_binary_with_credentials_its_sandbox_allows() {
    let unit = "examples/deploy/kubeanon.service";
    let settings = unit_settings(unit);
    let get = |key: &str| -> Vec<&str> {
        settings
            .iter()
            .filter(|(on, k, _)| *on && k == key)
            .map(|(_, _, v)| v.as_str())
            .collect()
    };
    // ExecStart runs what the README's Install puts in --root's bin/.
    let readme = read("README.md");
    let install = readme
        .split("\n## Install\n")
        .nth(1)
        .unwrap()
        .split("\n#")
        .next()
        .unwrap();
    let root = install
        .lines()
        .filter(|l| l.starts_with("cargo install "))
        .find_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let at = words.iter().position(|w| *w == "--root")?;
            words.get(at + 1).map(|r| r.to_string())
        })
        .expect("README Install: a `cargo install ... --root DIR` line");
    let exec = get("ExecStart");
    assert_eq!(exec.len(), 1, "{exec:?}");
    let program = exec[0].split_whitespace().next().unwrap();
    assert_eq!(
        program,
        format!("{root}/bin/kubeanon"),
        "ExecStart against the README's install"
    );
    // The sandbox leaves no home to read a ~/.aws from: the unit never
    // points there, and every credentials file it offers is outside home.
    assert_eq!(get("DynamicUser"), ["yes"]);
    assert_eq!(get("ProtectHome"), ["yes"]);
    let text = read(unit);
    assert!(!text.contains("~/.aws"), "{unit} suggests ~/.aws");
    let files: Vec<&(bool, String, String)> = settings
        .iter()
        .filter(|(_, k, v)| k == "Environment" && v.starts_with("AWS_"))
        .collect();
    let offered = |var: &str| {
        files
            .iter()
            .find_map(|(_, _, v)| v.strip_prefix(&format!("{var}=")))
            .unwrap_or_else(|| panic!("{unit} offers no {var}"))
            .to_string()
    };
    let config = offered("AWS_CONFIG_FILE");
    assert!(config.starts_with("/etc/"), "{config}");
    // Static keys come through LoadCredential=, into the credentials
    // directory (%d), under the name the credential is loaded as.
    let keys = offered("AWS_SHARED_CREDENTIALS_FILE");
    let name = keys.strip_prefix("%d/").expect("credentials from %d");
    let load = settings
        .iter()
        .find(|(_, k, _)| k == "LoadCredential")
        .map(|(_, _, v)| v.clone())
        .expect("LoadCredential= offered");
    let (id, source) = load.split_once(':').unwrap();
    assert_eq!(id, name);
    assert!(source.starts_with("/etc/"), "{source}");
    // The unit as offered, with its commented lines on, is one systemd
    // accepts (when systemd-analyze is here; a stand-in binary, since
    // kubeanon is not installed).
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok()
    {
        let dir = tempfile::tempdir().unwrap();
        let all_on: String = text
            .lines()
            .map(|l| match l.strip_prefix('#') {
                Some(r) if r.starts_with("Environment=") || r.starts_with("LoadCredential=") => {
                    r.to_string()
                }
                _ => l.replace(program, "/bin/true"),
            })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(dir.path().join("kubeanon.service"), all_on).unwrap();
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(dir.path().join("kubeanon.service"))
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && said.trim().is_empty(),
            "systemd-analyze verify: {said}"
        );
    }
}

#[test]
fn the_sharded_cronjob_is_an_indexed_job_on_s3_with_no_volume_and_a_policy_to_match() {
    use kubeanon::state::{S3Url, Shard};
    let docs = yaml_documents("examples/deploy/cronjob-sharded.yaml");
    let kind = |k: &str| {
        docs.iter()
            .find(|d| d["kind"] == k)
            .unwrap_or_else(|| panic!("no {k}"))
    };
    let (sa, cron) = (kind("ServiceAccount"), kind("CronJob"));
    assert_eq!(cron["spec"]["concurrencyPolicy"], "Forbid");
    let job = &cron["spec"]["jobTemplate"]["spec"];
    assert_eq!(job["completionMode"], "Indexed");
    let shards = job["completions"].as_u64().unwrap();
    assert_eq!(
        job["parallelism"].as_u64(),
        Some(shards),
        "all shards at once"
    );
    let pod = &job["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], sa["metadata"]["name"]);
    assert!(
        sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
            .as_str()
            .unwrap()
            .starts_with("arn:aws:iam::"),
        "IRSA"
    );
    assert!(pod.get("volumes").is_none(), "no volume");
    let container = &pod["containers"][0];
    assert!(container.get("volumeMounts").is_none(), "no volume");
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let flag = |name: &str| {
        args.iter()
            .find_map(|a| a.strip_prefix(&format!("--{name}=")))
            .unwrap_or_else(|| panic!("no --{name} in {args:?}"))
    };
    assert_eq!(args[0], "poll");
    // --shard takes each completion index, and N is the Job's completions.
    let shard = flag("shard");
    assert_eq!(shard, format!("$(JOB_COMPLETION_INDEX)/{shards}"));
    for i in 0..shards {
        let s = Shard::parse(&shard.replace("$(JOB_COMPLETION_INDEX)", &i.to_string())).unwrap();
        assert_eq!((u64::from(s.index), u64::from(s.count)), (i, shards));
    }
    assert!(Shard::parse(&shard.replace("$(JOB_COMPLETION_INDEX)", &shards.to_string())).is_err());
    // The policy grants exactly what the two s3:// URLs need.
    let state = S3Url::parse("--checkpoint", flag("checkpoint")).unwrap();
    let deliver = S3Url::parse("--deliver", flag("deliver")).unwrap();
    assert_eq!(state.bucket, deliver.bucket, "one bucket in this example");
    let policy: serde_json::Value =
        serde_json::from_str(&read("examples/deploy/iam-policy-s3.json")).unwrap();
    let arn = |prefix: &str| format!("arn:aws:s3:::{}/{prefix}*", state.bucket);
    let mut granted: Vec<(String, String)> = Vec::new();
    for st in policy["Statement"].as_array().unwrap() {
        assert_eq!(st["Effect"], "Allow");
        let list = |v: &serde_json::Value| -> Vec<String> {
            match v {
                serde_json::Value::String(s) => vec![s.clone()],
                v => v
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| s.as_str().unwrap().to_string())
                    .collect(),
            }
        };
        for action in list(&st["Action"]) {
            assert!(!action.contains('*'), "no wildcard actions: {action}");
            for resource in list(&st["Resource"]) {
                granted.push((action.clone(), resource));
            }
        }
        if list(&st["Action"]) == ["s3:ListBucket"] {
            let prefixes = list(&st["Condition"]["StringLike"]["s3:prefix"]);
            assert_eq!(
                prefixes,
                [format!("{}*", state.prefix), format!("{}*", deliver.prefix)]
            );
        }
    }
    let mut want = vec![
        (
            "s3:GetObject".to_string(),
            arn(&format!("{}state/", state.prefix)),
        ),
        (
            "s3:PutObject".to_string(),
            arn(&format!("{}state/", state.prefix)),
        ),
        (
            "s3:GetObject".to_string(),
            arn(&format!("{}lease/", state.prefix)),
        ),
        (
            "s3:PutObject".to_string(),
            arn(&format!("{}lease/", state.prefix)),
        ),
        (
            "s3:DeleteObject".to_string(),
            arn(&format!("{}lease/", state.prefix)),
        ),
        ("s3:GetObject".to_string(), arn(&deliver.prefix)),
        ("s3:PutObject".to_string(), arn(&deliver.prefix)),
        (
            "s3:ListBucket".to_string(),
            format!("arn:aws:s3:::{}", state.bucket),
        ),
    ];
    want.sort();
    granted.sort();
    assert_eq!(granted, want, "s3:DeleteObject on the lease prefix only");
}

#[test]
fn the_cronjob_runs_one_region_with_flags_kubeanon_accepts() {
    let args = cronjob_args();
    assert_eq!(args[0], "poll");
    assert_eq!(args.iter().filter(|a| a.starts_with("--region")).count(), 1);
    // Its state where the test can write, and nothing to connect to: a run
    // that gets as far as connecting took every flag.
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().display().to_string();
    let endpoint = closed_endpoint();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kubeanon"));
    aws_env(&mut cmd);
    let out = cmd
        .args(args.iter().map(|a| a.replace("/state", &state)))
        .arg("--endpoint-url")
        .arg(&endpoint)
        .output()
        .unwrap();
    // The first call of a run learns the caller's account from STS.
    assert_fails_with(&out, &["cannot connect to AWS STS", &endpoint]);
}

#[test]
fn the_sharded_cronjob_runs_with_flags_kubeanon_accepts() {
    let docs = yaml_documents("examples/deploy/cronjob-sharded.yaml");
    let cron = docs
        .iter()
        .find(|d| d["kind"] == "CronJob")
        .expect("a CronJob");
    let args: Vec<&str> = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
        ["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args[0], "poll");
    assert!(args.iter().any(|a| a.starts_with("--shard=")), "{args:?}");
    // Every pod of the Indexed Job: Kubernetes puts its completion index
    // where the args say $(JOB_COMPLETION_INDEX). Nothing to connect to: a
    // run that gets as far as connecting took every flag (a usage error
    // is exit 2 and says so).
    let shards = cron["spec"]["jobTemplate"]["spec"]["completions"]
        .as_u64()
        .unwrap();
    for index in [0, shards - 1] {
        let endpoint = closed_endpoint();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kubeanon"));
        aws_env(&mut cmd);
        let out = cmd
            .args(
                args.iter()
                    .map(|a| a.replace("$(JOB_COMPLETION_INDEX)", &index.to_string())),
            )
            .arg("--endpoint-url")
            .arg(&endpoint)
            .output()
            .unwrap();
        assert_fails_with(&out, &["cannot connect to", &endpoint]);
    }
}

#[test]
fn the_dockerfile_is_a_two_stage_non_root_build_as_the_readme_says() {
    let dockerfile = read("Dockerfile");
    // Instructions, comments dropped and continuation lines joined.
    let mut instructions: Vec<(String, String)> = Vec::new();
    let mut pending = String::new();
    for line in dockerfile.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        pending.push_str(line.trim_end_matches('\\'));
        if line.ends_with('\\') {
            pending.push(' ');
            continue;
        }
        let (word, rest) = pending.split_once(' ').expect("instruction with arguments");
        assert!(
            [
                "FROM",
                "WORKDIR",
                "COPY",
                "RUN",
                "USER",
                "ENTRYPOINT",
                "ENV",
                "ARG",
                "LABEL"
            ]
            .contains(&word),
            "unknown instruction {word}"
        );
        instructions.push((word.to_string(), rest.trim().to_string()));
        pending.clear();
    }
    let froms: Vec<&String> = instructions
        .iter()
        .filter(|i| i.0 == "FROM")
        .map(|i| &i.1)
        .collect();
    assert_eq!(froms.len(), 2, "a build stage and a runtime stage");
    assert!(froms[0].ends_with(" AS build"), "{}", froms[0]);
    assert!(froms[1].starts_with("gcr.io/distroless/"), "{}", froms[1]);
    let runtime = &instructions[instructions.iter().rposition(|i| i.0 == "FROM").unwrap()..];
    assert!(
        !runtime.iter().any(|i| i.0 == "RUN"),
        "nothing runs in the runtime image"
    );
    let user = &runtime.iter().find(|i| i.0 == "USER").expect("a USER").1;
    assert!(
        !user.starts_with("0") && !user.starts_with("root"),
        "non-root: {user}"
    );
    let entry = &runtime
        .iter()
        .find(|i| i.0 == "ENTRYPOINT")
        .expect("an ENTRYPOINT")
        .1;
    let entry: Vec<String> = serde_json::from_str(entry).expect("exec form");
    assert_eq!(entry, ["/usr/local/bin/kubeanon"]);
    assert!(
        instructions
            .iter()
            .any(|i| i.0 == "RUN" && i.1.contains("cargo build --locked --release")),
        "the locked release build"
    );
    // What the build stage copies exists.
    for (word, rest) in &instructions {
        if word == "COPY" && !rest.starts_with("--from") {
            let parts: Vec<&str> = rest.split_whitespace().collect();
            for src in &parts[..parts.len() - 1] {
                assert!(repo(src).exists(), "COPY {src}: not in the repository");
            }
        }
    }
    // The build command is the same in the Dockerfile, the README and the
    // image the CronJob runs.
    let build = "docker build -t kubeanon:0.1.0 .";
    assert!(dockerfile.contains(build));
    assert!(
        read("README.md").contains(build),
        "the README shows {build}"
    );
    assert!(read("examples/deploy/cronjob.yaml").contains("/kubeanon:0.1.0"));
}

#[test]
fn the_readme_walkthrough_polls_the_sample_from_an_emulator() {
    // examples/moto_demo.py loads the sample as cluster "demo"; poll then
    // finds what `scan` finds in the sample.
    let load = Command::new(python())
        .arg(repo("examples/moto_demo.py"))
        .arg(&moto().endpoint)
        .output()
        .unwrap();
    assert!(
        load.status.success(),
        "{}",
        String::from_utf8_lossy(&load.stderr)
    );
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kubeanon"));
    aws_env(&mut cmd);
    let polled = run(cmd.args([
        "poll",
        "--cluster",
        "demo",
        "--endpoint-url",
        &moto().endpoint,
    ]));
    let scanned = run(Command::new(env!("CARGO_BIN_EXE_kubeanon"))
        .arg("scan")
        .arg(repo("examples/eks-audit-sample.jsonl")));
    // The sample's 28 ESCU rows and its cut anonymous record (rule
    // truncated), read from the emulator as from the file. The cut
    // record's own time was cut away: from CloudWatch it takes the log
    // event's, from a bare file it has none.
    let mut polled_rows = rows(&polled.stdout);
    let mut scanned_rows = rows(&scanned.stdout);
    assert_eq!(polled_rows.len(), 29);
    for (rows, stamped) in [(&mut polled_rows, true), (&mut scanned_rows, false)] {
        let mut cut: Vec<&mut serde_json::Value> = rows
            .iter_mut()
            .filter(|r| r["rule"] == "truncated")
            .collect();
        assert_eq!(cut.len(), 1);
        assert_eq!(cut[0]["severity"], "high");
        let time = cut[0]["requestReceivedTimestamp"].as_str().unwrap();
        assert_eq!(time != "0", stamped, "{time}");
        cut[0]["requestReceivedTimestamp"] = "0".into();
    }
    assert_eq!(totals(&polled_rows), totals(&scanned_rows));
}

/// Kills the emulator examples/walkthrough.sh left running, however the
/// test ends.
struct Kill(u32);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.to_string()).status();
    }
}

/// The commands of the README's "Try `poll` without AWS", its `sh` blocks
/// in order, continuation lines joined, without the script's line and the
/// `export` placeholder.
fn readme_walkthrough_commands() -> Vec<String> {
    let readme = read("README.md");
    let section = readme
        .split("\n### Try `poll` without AWS\n")
        .nth(1)
        .unwrap()
        .split("\n#")
        .next()
        .unwrap();
    let block: String = section
        .split("```sh\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap())
        .collect();
    let block = block.replace("\\\n", " ");
    let commands: Vec<String> = block.lines().map(|l| l.trim().to_string()).collect();
    assert_eq!(commands[0], "examples/walkthrough.sh");
    assert!(commands[1].starts_with("export DEMO="), "{}", commands[1]);
    commands[2..].to_vec()
}

#[test]
fn the_walkthrough_script_sets_up_the_emulator_and_the_readmes_polls_tell_the_schedule() {
    // The script with the tests' python (no PyPI here), as a reader runs
    // it: its own moto on a free port, the sample loaded, an export line.
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(repo("examples/walkthrough.sh"))
        .env("KUBEANON_DEMO_PYTHON", python())
        .env("TMPDIR", tmp.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let pid = stdout
        .split(", pid ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|p| p.parse::<u32>().ok());
    let _kill = pid.map(Kill);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(pid.is_some(), "no pid in {stdout}");
    assert!(
        stdout.contains("467 events in /aws/eks/demo/cluster")
            && stdout
                .contains("EKS cluster demo (1.33, audit logging on) and S3 bucket kubeanon-demo"),
        "{stdout}"
    );
    let export = stdout
        .lines()
        .find_map(|l| l.strip_prefix("export "))
        .unwrap_or_else(|| panic!("no export line in {stdout}"));
    let vars: Vec<(&str, &str)> = export
        .split_whitespace()
        .map(|kv| kv.split_once('=').unwrap())
        .collect();
    let var = |k: &str| vars.iter().find(|(n, _)| *n == k).unwrap().1;
    assert!(var("DEMO").starts_with("http://127.0.0.1:"));
    assert!(var("DEMO_CHECKPOINT").starts_with(tmp.path().to_str().unwrap()));
    // The README's commands, `cargo run --` being this build's kubeanon.
    let commands = readme_walkthrough_commands();
    assert_eq!(commands.len(), 6, "{commands:?}");
    let mut said = Vec::new();
    for c in &commands {
        let c = c.replace("cargo run --", env!("CARGO_BIN_EXE_kubeanon"));
        let mut cmd = Command::new("bash");
        aws_env(&mut cmd);
        for (k, v) in &vars {
            cmd.env(k, v);
        }
        let out = cmd
            .current_dir(repo("."))
            .args(["-c", &c])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{c}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        said.push(out);
    }
    // A table: a header line, then a row per line.
    let table_rows = |o: &std::process::Output| -> Vec<String> {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .skip(1)
            .map(String::from)
            .collect()
    };
    let stderr = |o: &std::process::Output| String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(table_rows(&said[0]).len(), 29);
    assert!(
        stderr(&said[0]).contains("29 findings"),
        "{}",
        stderr(&said[0])
    );
    // What the README says of the second poll: the two new requests only.
    let second = table_rows(&said[2]);
    assert_eq!(second.len(), 2, "{second:?}");
    assert!(
        second
            .iter()
            .any(|r| r.starts_with("critical ") && r.contains(" list  /api/v1/")),
        "{second:?}"
    );
    assert!(
        second
            .iter()
            .any(|r| r.starts_with("low ") && r.contains(" get   /version "))
    );
    let summary = stderr(&said[2]);
    assert!(
        summary.contains("3 events, ") && summary.contains("2 matched, 2 findings"),
        "{summary}"
    );
    // The fleet: doctor discovers `demo`, its audit logging and version.
    assert!(
        commands[3].contains(" doctor --all-clusters "),
        "{}",
        commands[3]
    );
    let doctor = String::from_utf8_lossy(&said[3].stdout).into_owned();
    let ok: Vec<&str> = doctor.lines().filter(|l| l.starts_with("ok ")).collect();
    assert_eq!(ok.len(), 2, "{doctor}");
    assert_eq!(doctor.lines().count(), 2, "{doctor}");
    assert!(
        ok[1].contains("account 123456789012, us-east-1 cluster demo: audit logging on, log group /aws/eks/demo/cluster exists")
            && ok[1].contains("Kubernetes 1.33: "),
        "{doctor}"
    );
    // S3 state: the first run delivers everything once, the second nothing.
    for c in &commands[4..] {
        assert!(
            c.contains(" poll --all-clusters ")
                && c.contains("--checkpoint s3://kubeanon-demo/kubeanon/ --deliver s3://kubeanon-demo/findings/"),
            "{c}"
        );
    }
    assert_eq!(commands[4], commands[5]);
    for o in &said[4..] {
        assert!(
            o.stdout.is_empty(),
            "{}",
            String::from_utf8_lossy(&o.stdout)
        );
    }
    let first = stderr(&said[4]);
    assert!(
        first.contains("469 events, ")
            && first.contains(" 31 findings;")
            && first.contains("; 1 object delivered to S3,"),
        "{first}"
    );
    let again = stderr(&said[5]);
    assert!(
        again.contains("3 events, 0 malformed, 0 matched, 0 findings; 0 late, 2 already reported,")
            && again.contains("; 0 objects delivered to S3,"),
        "{again}"
    );
    // What is in the bucket: one delivery, one unit's state.
    let list = Command::new(var("DEMO_PYTHON"))
        .args([
            "-c",
            "import boto3, sys; s = boto3.client('s3', endpoint_url=sys.argv[1], region_name='us-east-1'); \
             print('\\n'.join(o['Key'] for o in s.list_objects_v2(Bucket='kubeanon-demo')['Contents']))",
            var("DEMO"),
        ])
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .output()
        .unwrap();
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    let keys = String::from_utf8_lossy(&list.stdout).into_owned();
    let keys: Vec<&str> = keys.lines().collect();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(
        keys[0].starts_with("findings/account=123456789012/region=us-east-1/cluster=demo/dt=")
            && keys[0].ends_with(".ndjson.gz"),
        "{keys:?}"
    );
    assert_eq!(
        keys[1],
        "kubeanon/state/123456789012/us-east-1/%2Faws%2Feks%2Fdemo%2Fcluster.json"
    );
}

/// Every AWS action kubeanon's code calls, by the SDK operation's name: the
/// policy must grant each (STS GetCallerIdentity needs no grant).
const CALLED: [&str; 9] = [
    "logs:FilterLogEvents",
    "logs:DescribeLogStreams",
    "logs:DescribeLogGroups",
    "logs:StartQuery",
    "logs:GetQueryResults",
    "logs:StopQuery",
    "logs:DescribeQueries",
    "eks:ListClusters",
    "eks:DescribeCluster",
];

fn json(path: &str) -> serde_json::Value {
    serde_json::from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn actions(policy: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    for s in policy["Statement"].as_array().unwrap() {
        assert_eq!(s["Effect"], "Allow");
        match &s["Action"] {
            serde_json::Value::String(a) => out.push(a.clone()),
            serde_json::Value::Array(a) => {
                out.extend(a.iter().map(|a| a.as_str().unwrap().to_string()))
            }
            other => panic!("{other}"),
        }
    }
    out
}

#[test]
fn the_iam_files_grant_what_kubeanon_calls_and_agree_with_each_other() {
    let reader = json("iam-policy.json");
    let mut granted = actions(&reader);
    granted.sort();
    let mut called = CALLED.map(String::from).to_vec();
    called.sort();
    assert_eq!(granted, called, "least privilege: exactly what is called");
    // The calls are what the code says they are.
    for call in [
        "filter_log_events",
        "describe_log_streams",
        "describe_log_groups",
        "start_query",
        "get_query_results",
        "stop_query",
        "describe_queries",
        "list_clusters",
        "describe_cluster",
    ] {
        let sources = [
            read("src/source/cloudwatch.rs"),
            read("src/source/insights.rs"),
            read("src/fleet/discover.rs"),
            read("src/fleet/version.rs"),
        ];
        assert!(
            sources.iter().any(|s| s.contains(&format!(".{call}()"))),
            "{call}"
        );
    }
    // The StackSet template's role is the reader policy with the trust
    // policy, unchanged.
    let cfn = json("examples/iam/reader-role.cfn.json");
    let role = &cfn["Resources"]["KubeanonReader"]["Properties"];
    assert_eq!(role["RoleName"], "kubeanon-reader");
    assert_eq!(role["Policies"][0]["PolicyDocument"], reader);
    let trust = json("examples/iam/trust-policy.json");
    let mut templated = role["AssumeRolePolicyDocument"].clone();
    let st = &mut templated["Statement"][0];
    assert_eq!(st["Principal"]["AWS"]["Ref"], "ScannerRoleArn");
    assert_eq!(
        st["Condition"]["StringEquals"]["sts:ExternalId"]["Ref"],
        "ExternalId"
    );
    st["Principal"]["AWS"] = trust["Statement"][0]["Principal"]["AWS"].clone();
    st["Condition"]["StringEquals"]["sts:ExternalId"] =
        trust["Statement"][0]["Condition"]["StringEquals"]["sts:ExternalId"].clone();
    assert_eq!(templated, trust);
    // Only kubeanon's own sessions, under the name it uses.
    assert_eq!(
        trust["Statement"][0]["Condition"]["StringEquals"]["sts:RoleSessionName"],
        kubeanon::fleet::SESSION_NAME
    );
    // `--deliver securityhub`: one more statement, in its own file, for
    // the roles that import (each account's reader, or the caller):
    // BatchImportFindings into the caller's own account's default product,
    // the one call deliver/securityhub.rs makes.
    let hub = json("examples/iam/securityhub-policy.json");
    assert_eq!(actions(&hub), ["securityhub:BatchImportFindings"]);
    assert_eq!(
        hub["Statement"][0]["Resource"],
        "arn:aws:securityhub:*:${aws:PrincipalAccount}:product/${aws:PrincipalAccount}/default"
    );
    assert!(read("src/deliver/securityhub.rs").contains(".batch_import_findings()"));
    // The scanner may assume the reader role, and nothing else.
    let scanner = json("examples/iam/scanner-policy.json");
    assert_eq!(actions(&scanner), ["sts:AssumeRole"]);
    assert_eq!(
        scanner["Statement"][0]["Resource"],
        "arn:aws:iam::*:role/kubeanon-reader"
    );
}
