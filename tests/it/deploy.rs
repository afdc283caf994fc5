//! The deploy recipes in deploy/, as far as this machine can test them: the systemd unit passes
//! systemd's own verifier, the Fly configuration ships a configuration file OffsiteDB accepts, and
//! the binary needs nothing at run time beyond glibc (no OpenSSL, no libpq).

use std::process::Command;

use crate::common::{offsitedb_bin, project_dir};

#[test]
fn the_binary_needs_only_glibc() {
    let out = Command::new("ldd").arg(offsitedb_bin()).output().unwrap();
    assert!(out.status.success(), "ldd failed");
    let text = String::from_utf8_lossy(&out.stdout);
    let allowed = [
        "linux-vdso",
        "libgcc_s",
        "libm",
        "libc",
        "ld-linux",
        "libpthread",
        "libdl",
        "librt",
    ];
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let name = line.split_whitespace().next().unwrap();
        let base = name.rsplit('/').next().unwrap();
        assert!(
            allowed.iter().any(|a| base.starts_with(a)),
            "the binary links {base}: only glibc is allowed\n{text}"
        );
    }
    assert!(text.contains("libc.so"), "{text}");
}

/// `systemd-analyze verify` on the unit (with the paths of this machine).
fn verify(unit_text: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("offsitedb.service");
    std::fs::write(&unit, unit_text).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .expect("systemd-analyze (Debian package systemd) is needed to verify the unit");
    (
        out.status.success() && out.stderr.is_empty(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_systemd_unit_is_valid() {
    let text = std::fs::read_to_string(project_dir().join("deploy/offsitedb.service")).unwrap();
    assert!(text.contains("ExecStart=/usr/local/bin/offsitedb serve"));
    assert!(
        text.contains("KillMode=mixed"),
        "offsitedb must get SIGTERM alone"
    );
    let here = text.replace(
        "/usr/local/bin/offsitedb",
        offsitedb_bin().to_str().unwrap(),
    );
    let (ok, err) = verify(&here);
    assert!(ok, "{err}");
    // The verifier does catch mistakes.
    let (ok, err) = verify(&here.replace("KillMode=mixed", "KillMode=sometimes"));
    assert!(!ok, "a bad KillMode passed: {err}");
}

/// The container's entrypoint, run here for real as root: it makes the data folders the service
/// user's and runs offsitedb as that user.
#[test]
fn the_entrypoint_drops_root_and_owns_the_volume() {
    if unsafe { libc::geteuid() } != 0 {
        panic!("this test needs root (the CI machines run as root)");
    }
    let script = std::fs::read_to_string(project_dir().join("deploy/entrypoint.sh")).unwrap();
    let data = tempfile::tempdir().unwrap();
    let bin = tempfile::tempdir().unwrap();
    // The script as the image has it, with this machine's paths: the data folder, the binary,
    // and the `postgres` user standing in for `offsitedb`.
    let fake = bin.path().join("offsitedb");
    std::fs::write(&fake, "#!/bin/sh\necho \"$(id -un) $*\"\n").unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::set_permissions(
        bin.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let script = script
        .replace("/data", data.path().to_str().unwrap())
        .replace("/usr/local/bin/offsitedb", fake.to_str().unwrap())
        .replace("offsitedb:offsitedb", "postgres:postgres")
        .replace(
            "--reuid=offsitedb --regid=offsitedb",
            "--reuid=postgres --regid=postgres",
        );
    let out = Command::new("sh")
        .arg("-c")
        .arg(&script)
        .arg("entrypoint")
        .args(["serve", "--log-format", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "postgres serve --log-format json"
    );
    let owner = |p: &str| {
        std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(data.path().join(p)).unwrap())
    };
    let pg = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(data.path()).unwrap());
    assert_eq!(owner("state"), pg);
    assert_eq!(owner("tmp"), pg);
    assert_ne!(pg, 0);
}

#[test]
fn the_fly_app_ships_a_configuration_offsitedb_accepts() {
    let root = project_dir();
    let fly: toml::Value =
        toml::from_str(&std::fs::read_to_string(root.join("deploy/fly.toml")).unwrap()).unwrap();
    let file = &fly["files"][0];
    assert_eq!(
        file["guest_path"].as_str(),
        Some("/etc/offsitedb/offsitedb.toml")
    );
    assert_eq!(
        fly["env"]["OFFSITEDB_CONFIG"].as_str(),
        file["guest_path"].as_str()
    );
    // State and drills live on the volume.
    let mount = fly["mounts"]["destination"].as_str().unwrap();
    for k in ["OFFSITEDB_STATE_DIR", "OFFSITEDB_TMPDIR"] {
        assert!(fly["env"][k].as_str().unwrap().starts_with(mount), "{k}");
    }
    // The configuration parses, with its ${VAR}s set as `fly secrets` would.
    let text = std::fs::read_to_string(root.join(file["local_path"].as_str().unwrap())).unwrap();
    let env = |k: &str| match k {
        "B2_KEY_ID" | "B2_APPLICATION_KEY" => Some("x".to_string()),
        "FLY_DATABASE_URL" => Some("postgres://backup:pw@my-db.flycast:5432/app".to_string()),
        "HEARTBEAT_URL" => Some("https://hc-ping.com/uuid".to_string()),
        _ => None,
    };
    let c = offsitedb::config::parse(&text, "deploy/fly/offsitedb.toml", &env).unwrap();
    assert_eq!(c.sources[0].schedule.as_deref(), Some("hourly"));
    assert_eq!(c.server.unwrap().listen.as_deref(), Some("[::]:8080"));
    // The metrics port is the one the daemon listens on.
    assert_eq!(fly["metrics"]["port"].as_integer(), Some(8080));

    // The image: the same release build as CI, PostgreSQL from PGDG, not root.
    let docker = std::fs::read_to_string(root.join("deploy/Dockerfile")).unwrap();
    assert!(docker.contains("cargo build --release --locked"));
    assert!(docker.contains("ENTRYPOINT [\"/usr/local/bin/offsitedb-entrypoint\"]"));
    assert!(
        !docker.contains("\nUSER "),
        "the entrypoint must start as root to own /data"
    );
    assert!(docker.contains("OFFSITEDB_STATE_DIR=/data/state"));
}

/// The fleet recipes: the Kubernetes Deployment runs `serve` replicas named after their pods on
/// the shared state from the Secret, with a configuration OffsiteDB accepts; the systemd drop-in
/// names each host's worker and passes systemd's verifier with the unit.
#[test]
fn the_fleet_recipes_run_named_workers_on_a_shared_state() {
    let root = project_dir();
    let path = root.join("deploy/fleet/kubernetes.yaml");
    // Debian's python3-yaml reads the manifest (a YAML parser the suite does not otherwise need).
    let out = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))",
        ])
        .arg(&path)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "python3 cannot read the manifest (apt-get install python3-yaml): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let docs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let find = |kind: &str| {
        docs.as_array()
            .unwrap()
            .iter()
            .find(|d| d["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind}"))
            .clone()
    };
    let deployment = find("Deployment");
    assert!(deployment["spec"]["replicas"].as_i64().unwrap() >= 2);
    let pod = &deployment["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(c["args"][0], "serve");
    let env = c["env"].as_array().unwrap();
    let var = |name: &str| env.iter().find(|e| e["name"] == name).cloned();
    assert_eq!(
        var("OFFSITEDB_WORKER_NAME").unwrap()["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    assert!(
        var("OFFSITEDB_STATE_DIR").unwrap()["value"]
            .as_str()
            .unwrap()
            .starts_with("/data")
    );
    assert_eq!(c["envFrom"][0]["secretRef"]["name"], "offsitedb");
    // SIGTERM hands jobs over within 60 s: the pod gets longer than that.
    assert!(pod["terminationGracePeriodSeconds"].as_i64().unwrap() > 60);
    // The configuration parses, with the Secret's variables set.
    let text = find("ConfigMap")["data"]["offsitedb.toml"]
        .as_str()
        .unwrap()
        .to_string();
    let env = |k: &str| match k {
        "APP_DATABASE_URL" => Some("postgres://backup:pw@app-db:5432/app".to_string()),
        _ => None,
    };
    let cfg = offsitedb::config::parse(&text, "deploy/fleet/kubernetes.yaml", &env).unwrap();
    assert_eq!(cfg.worker.unwrap().lease.as_deref(), Some("30s"));
    assert_eq!(cfg.server.unwrap().listen.as_deref(), Some("0.0.0.0:8080"));

    // systemd: the unit with the fleet drop-in.
    let unit = std::fs::read_to_string(root.join("deploy/offsitedb.service")).unwrap();
    let dropin = std::fs::read_to_string(root.join("deploy/fleet/offsitedb-fleet.conf")).unwrap();
    assert!(dropin.contains("Environment=OFFSITEDB_WORKER_NAME=%H"));
    let body: String = dropin
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("[Service]"))
        .map(|l| format!("{l}\n"))
        .collect();
    let merged = unit
        .replacen("[Service]\n", &format!("[Service]\n{body}"), 1)
        .replace(
            "/usr/local/bin/offsitedb",
            offsitedb_bin().to_str().unwrap(),
        );
    let (ok, text) = verify(&merged);
    assert!(ok, "{text}");
}
