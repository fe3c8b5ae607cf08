//! The container image and the Kubernetes manifests in `deploy/`: they parse, and what they
//! name exists — the files the Dockerfile copies, the binary it builds, the config the
//! ConfigMap holds (the proxy's own parser accepts it), the ports and probe the Deployment
//! uses, the labels the Service and the PodDisruptionBudget select.

use std::path::Path;

use yaml_rust2::{Yaml, YamlLoader};

fn load(path: &str) -> Yaml {
    let text =
        std::fs::read_to_string(ficus_e2e::workspace_root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut docs = YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert_eq!(docs.len(), 1, "{path}: one document");
    docs.remove(0)
}

fn s(y: &Yaml) -> &str {
    y.as_str().unwrap_or_else(|| panic!("a string, not {y:?}"))
}

#[test]
fn the_dockerfile_copies_what_exists_and_builds_the_ficus_binary() {
    let root = ficus_e2e::workspace_root();
    let text = std::fs::read_to_string(root.join("deploy/Dockerfile")).unwrap();
    let mut copied = 0;
    for line in text.lines().filter(|l| l.starts_with("COPY ") && !l.contains("--from=")) {
        let parts: Vec<&str> = line.split_whitespace().collect();
        for src in &parts[1..parts.len() - 1] {
            assert!(root.join(src).exists(), "COPY {src}: no such file in the repository");
            copied += 1;
        }
    }
    assert!(copied >= 5, "{text}");
    // Every workspace member the build needs is copied.
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let members: Vec<&str> = manifest
        .lines()
        .skip_while(|l| !l.starts_with("members"))
        .skip(1)
        .take_while(|l| !l.starts_with(']'))
        .map(|l| l.trim().trim_matches(|c| c == '"' || c == ','))
        .collect();
    for m in &members {
        let top = m.split('/').next().unwrap();
        assert!(text.contains(&format!("COPY {top} {top}")), "member {m} is not copied");
    }
    assert!(text.contains("cargo build --release -p ficus"), "{text}");
    assert!(std::fs::read_to_string(root.join("cli/Cargo.toml")).unwrap().contains("name = \"ficus\""));
    // The toolchain image is the one the workspace asks for.
    let version = manifest.lines().find_map(|l| l.strip_prefix("rust-version = ")).unwrap().trim_matches('"');
    assert!(text.contains(&format!("FROM rust:{version}")), "rust {version}");
    assert!(text.contains(r#"CMD ["proxy", "--config", "/etc/ficus/ficus.toml"]"#));
}

#[test]
fn the_manifests_fit_together_and_the_config_is_valid() {
    let config_map = load("deploy/k8s/configmap.yaml");
    let deployment = load("deploy/k8s/deployment.yaml");
    let service = load("deploy/k8s/service.yaml");
    let pdb = load("deploy/k8s/pdb.yaml");
    assert_eq!(s(&config_map["kind"]), "ConfigMap");
    assert_eq!(
        (s(&deployment["kind"]), s(&service["kind"]), s(&pdb["kind"])),
        ("Deployment", "Service", "PodDisruptionBudget")
    );
    assert_eq!(s(&pdb["apiVersion"]), "policy/v1");

    // The config the ConfigMap carries is one the proxy accepts.
    let toml = s(&config_map["data"]["ficus.toml"]);
    let config = ficus_proxy::Config::parse(toml, Path::new("ficus.toml")).unwrap_or_else(|e| panic!("{e}"));
    assert!(config.state.store.is_some(), "several replicas share a store");

    // The Deployment runs it, mounted where the command reads it.
    let spec = &deployment["spec"]["template"]["spec"];
    let container = &spec["containers"][0];
    let args: Vec<&str> = container["args"].as_vec().unwrap().iter().map(s).collect();
    assert_eq!(args[..2], ["proxy", "--config"]);
    let mount = container["volumeMounts"].as_vec().unwrap().iter().find(|m| s(&m["name"]) == "config").unwrap();
    assert_eq!(format!("{}/ficus.toml", s(&mount["mountPath"])), args[2]);
    let volume = spec["volumes"].as_vec().unwrap().iter().find(|v| s(&v["name"]) == "config").unwrap();
    assert_eq!(s(&volume["configMap"]["name"]), s(&config_map["metadata"]["name"]));

    // Its ports are the config's listeners; readiness is the admin API's /healthz.
    let ports: Vec<(&str, i64)> = container["ports"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|p| (s(&p["name"]), p["containerPort"].as_i64().unwrap()))
        .collect();
    let port = |name: &str| ports.iter().find(|p| p.0 == name).map(|p| p.1);
    assert_eq!(port("http"), Some(i64::from(config.listen.http.port())));
    assert_eq!(port("admin"), config.listen.admin.map(|a| i64::from(a.port())));
    let probe = &container["readinessProbe"]["httpGet"];
    assert_eq!((s(&probe["path"]), s(&probe["port"])), ("/healthz", "admin"));

    // The Service and the budget select the Deployment's pods, by ports it has.
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    assert_eq!(&deployment["spec"]["selector"]["matchLabels"], labels);
    assert_eq!(&service["spec"]["selector"], labels);
    assert_eq!(&pdb["spec"]["selector"]["matchLabels"], labels);
    for p in service["spec"]["ports"].as_vec().unwrap() {
        let target = s(&p["targetPort"]);
        assert!(port(target).is_some(), "the Service targets port `{target}`, which the pods do not name");
    }
    assert!(deployment["spec"]["replicas"].as_i64().unwrap() > 1);
}
