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

/// Every AWS action kubeanon's code calls, by the SDK operation's name: the
/// policy must grant each (STS GetCallerIdentity needs no grant).
const CALLED: [&str; 8] = [
    "logs:FilterLogEvents",
    "logs:DescribeLogStreams",
    "logs:DescribeLogGroups",
    "logs:StartQuery",
    "logs:GetQueryResults",
    "logs:StopQuery",
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
    // The scanner may assume the reader role, and nothing else.
    let scanner = json("examples/iam/scanner-policy.json");
    assert_eq!(actions(&scanner), ["sts:AssumeRole"]);
    assert_eq!(
        scanner["Statement"][0]["Resource"],
        "arn:aws:iam::*:role/kubeanon-reader"
    );
}
