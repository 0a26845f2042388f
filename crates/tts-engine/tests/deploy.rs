//! What can be checked of deploy/ without Docker or a cluster: the Kubernetes manifests parse as
//! YAML with the kinds and API versions expected, their probes answer 200 and the HPA's metric is
//! one `/metrics` exports (against the real `tts serve` binary on the tiny model), the flags they
//! pass are flags `tts serve` takes, the port agrees across the Dockerfile, the Deployment and the
//! Service, and the Dockerfile builds with the README's build command.
mod common;

use std::path::{Path, PathBuf};

use common::generate_model_dir;
use common::spawned::{ServerProcess, get};
use yaml_rust2::{Yaml, YamlLoader};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The one document of `deploy/k8s/NAME`.
fn manifest(name: &str) -> Yaml {
    let text = read(&format!("deploy/k8s/{name}"));
    let mut docs = YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{name} is not YAML: {e}"));
    assert_eq!(docs.len(), 1, "{name}: one document");
    docs.remove(0)
}

/// The value at a path of keys (`&str`) and list indices (`usize` as text: "0").
fn at<'a>(doc: &'a Yaml, path: &str) -> &'a Yaml {
    path.split('.').fold(doc, |node, key| match key.parse::<usize>() {
        Ok(i) => &node[i],
        Err(_) => &node[key],
    })
}

fn str_at<'a>(doc: &'a Yaml, path: &str) -> &'a str {
    at(doc, path).as_str().unwrap_or_else(|| panic!("{path}: not a string: {:?}", at(doc, path)))
}

/// The Deployment's only container.
fn container(deployment: &Yaml) -> &Yaml {
    let list = at(deployment, "spec.template.spec.containers").as_vec().expect("containers");
    assert_eq!(list.len(), 1, "one container per pod");
    &list[0]
}

/// The container's args as strings.
fn args(deployment: &Yaml) -> Vec<String> {
    container(deployment)["args"].as_vec().expect("args").iter().map(|a| a.as_str().expect("a string arg").to_string()).collect()
}

/// The value that follows `flag` in `args`.
fn flag_value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).map(String::as_str)
}

/// The container port named `name` (a probe's or the Service's `targetPort`), or the number itself.
fn resolve_port(deployment: &Yaml, port: &Yaml) -> i64 {
    if let Some(n) = port.as_i64() {
        return n;
    }
    let name = port.as_str().expect("a port number or name");
    container(deployment)["ports"]
        .as_vec()
        .expect("container ports")
        .iter()
        .find(|p| p["name"].as_str() == Some(name))
        .and_then(|p| p["containerPort"].as_i64())
        .unwrap_or_else(|| panic!("no container port named {name}"))
}

/// The Dockerfile's instructions: (keyword, rest), continuation lines joined, comments dropped.
fn dockerfile() -> Vec<(String, String)> {
    let text = read("deploy/Dockerfile");
    let mut out = Vec::new();
    let mut pending = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') || (t.is_empty() && pending.is_empty()) {
            continue;
        }
        if let Some(cont) = t.strip_suffix('\\') {
            pending.push_str(cont.trim());
            pending.push(' ');
            continue;
        }
        pending.push_str(t);
        let (kw, rest) = pending.split_once(' ').unwrap_or((&pending, ""));
        out.push((kw.to_ascii_uppercase(), rest.trim().to_string()));
        pending.clear();
    }
    assert!(pending.is_empty(), "the Dockerfile ends in a continuation");
    out
}

fn instructions(kw: &str) -> Vec<String> {
    dockerfile().into_iter().filter(|(k, _)| k == kw).map(|(_, r)| r).collect()
}

/// A JSON-array (exec form) instruction's words.
fn exec_form(rest: &str) -> Vec<String> {
    serde_json::from_str(rest).unwrap_or_else(|e| panic!("not the exec form ({e}): {rest}"))
}

#[test]
fn every_manifest_parses_with_its_kind_and_api_version() {
    let expected = [
        ("deployment.yaml", "apps/v1", "Deployment"),
        ("service.yaml", "v1", "Service"),
        ("hpa.yaml", "autoscaling/v2", "HorizontalPodAutoscaler"),
        ("voices-pvc.yaml", "v1", "PersistentVolumeClaim"),
    ];
    let mut files: Vec<String> = std::fs::read_dir(repo().join("deploy/k8s"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    let mut named: Vec<String> = expected.iter().map(|(f, _, _)| f.to_string()).collect();
    named.sort();
    assert_eq!(files, named, "every manifest of deploy/k8s/ is checked here");
    for (file, api, kind) in expected {
        let doc = manifest(file);
        assert_eq!(str_at(&doc, "apiVersion"), api, "{file}");
        assert_eq!(str_at(&doc, "kind"), kind, "{file}");
        assert!(!str_at(&doc, "metadata.name").is_empty(), "{file}");
    }
}

#[test]
fn the_deployment_service_and_hpa_refer_to_each_other() {
    let (dep, svc, hpa, pvc) =
        (manifest("deployment.yaml"), manifest("service.yaml"), manifest("hpa.yaml"), manifest("voices-pvc.yaml"));
    let name = str_at(&dep, "metadata.name");
    // the selector matches the pod template; the Service selects the same pods
    let selector = at(&dep, "spec.selector.matchLabels").as_hash().expect("matchLabels");
    assert!(!selector.is_empty());
    for (k, v) in selector {
        assert_eq!(&at(&dep, "spec.template.metadata.labels")[k.as_str().unwrap()], v, "pod labels carry the selector");
        assert_eq!(&at(&svc, "spec.selector")[k.as_str().unwrap()], v, "the Service selects the Deployment's pods");
    }
    // one GPU per pod
    assert_eq!(container(&dep)["resources"]["limits"]["nvidia.com/gpu"].as_i64(), Some(1), "one engine per GPU");
    // the HPA scales this Deployment
    assert_eq!(str_at(&hpa, "spec.scaleTargetRef.kind"), "Deployment");
    assert_eq!(str_at(&hpa, "spec.scaleTargetRef.apiVersion"), str_at(&dep, "apiVersion"));
    assert_eq!(str_at(&hpa, "spec.scaleTargetRef.name"), name);
    assert!(at(&hpa, "spec.minReplicas").as_i64().unwrap() >= 1);
    assert!(at(&hpa, "spec.maxReplicas").as_i64().unwrap() >= at(&hpa, "spec.minReplicas").as_i64().unwrap());
    // the API key from a Secret
    let env = container(&dep)["env"].as_vec().expect("env");
    let key = env.iter().find(|e| e["name"].as_str() == Some("TTS_API_KEY")).expect("TTS_API_KEY in env");
    assert!(key["valueFrom"]["secretKeyRef"]["name"].as_str().is_some(), "the key comes from a Secret");
    // the voices claim is the PVC of voices-pvc.yaml, ReadWriteMany (every replica sees the voices)
    let volumes = at(&dep, "spec.template.spec.volumes").as_vec().expect("volumes");
    let claim = volumes.iter().find_map(|v| v["persistentVolumeClaim"]["claimName"].as_str()).expect("a PVC volume");
    assert_eq!(claim, str_at(&pvc, "metadata.name"));
    assert_eq!(str_at(&pvc, "spec.accessModes.0"), "ReadWriteMany");
    // the drain: a grace period at least the request timeout the server is given
    let timeout: f64 = flag_value(&args(&dep), "--request-timeout-s").expect("--request-timeout-s").parse().unwrap();
    let grace = at(&dep, "spec.template.spec.terminationGracePeriodSeconds").as_i64().expect("a grace period");
    assert!(grace as f64 >= timeout, "terminationGracePeriodSeconds {grace} < --request-timeout-s {timeout}");
    assert!(container(&dep)["lifecycle"]["preStop"].as_hash().is_some(), "a preStop pause before SIGTERM");
}

#[test]
fn one_port_across_the_dockerfile_the_deployment_and_the_service() {
    let (dep, svc) = (manifest("deployment.yaml"), manifest("service.yaml"));
    let expose: Vec<i64> = instructions("EXPOSE").iter().map(|p| p.parse().expect("EXPOSE a number")).collect();
    assert_eq!(expose.len(), 1, "one EXPOSE");
    let port = expose[0];
    let cmd = exec_form(instructions("CMD").last().expect("a CMD"));
    assert_eq!(flag_value(&cmd, "--port").map(|p| p.parse::<i64>().unwrap()), Some(port), "the image's default --port");
    let a = args(&dep);
    assert_eq!(flag_value(&a, "--port").map(|p| p.parse::<i64>().unwrap()), Some(port), "the Deployment's --port");
    let ports = container(&dep)["ports"].as_vec().expect("container ports");
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0]["containerPort"].as_i64(), Some(port));
    let svc_ports = at(&svc, "spec.ports").as_vec().expect("Service ports");
    assert_eq!(svc_ports.len(), 1);
    assert_eq!(resolve_port(&dep, &svc_ports[0]["targetPort"]), port, "the Service's targetPort");
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(resolve_port(&dep, &container(&dep)[probe]["httpGet"]["port"]), port, "{probe}");
    }
    let ann = &at(&dep, "spec.template.metadata.annotations")["prometheus.io/port"];
    assert_eq!(ann.as_str().map(|p| p.parse::<i64>().unwrap()), Some(port), "the scrape port");
}

/// The README's build command: the one line of README.md that starts with `cargo build`.
fn readme_build_command() -> String {
    let readme = read("README.md");
    let lines: Vec<&str> = readme.lines().map(str::trim).filter(|l| l.starts_with("cargo build")).collect();
    assert_eq!(lines.len(), 1, "one build command in the README: {lines:?}");
    lines[0].to_string()
}

#[test]
fn the_image_builds_with_the_readme_build_command_and_runs_tts_serve_unprivileged() {
    let build = readme_build_command();
    assert!(build.contains("--release"), "{build}");
    let runs = instructions("RUN");
    let cargo: Vec<&String> = runs.iter().filter(|r| r.contains("cargo")).collect();
    assert_eq!(cargo, vec![&build], "the Dockerfile's one cargo RUN is the README's build command");
    let from = instructions("FROM");
    assert_eq!(from.len(), 2, "two stages: {from:?}");
    assert!(from[0].ends_with(" AS build"), "the build stage: {}", from[0]);
    assert!(from[1].starts_with("nvidia/cuda:") && from[1].contains("-runtime-"), "a CUDA runtime base: {}", from[1]);
    // the binary the build writes is the one copied
    let copy = instructions("COPY");
    let binary = copy.iter().find(|c| c.starts_with("--from=build")).expect("a COPY from the build stage");
    assert!(binary.contains("/target/release/tts "), "{binary}");
    // the libraries the Cuda backend loads are checked in the image
    let runtime = runs.iter().find(|r| r.contains("ldconfig")).expect("a check of the CUDA libraries");
    for lib in ["libnvrtc.so.12", "libnvrtc-builtins.so.12", "libcublas.so.12", "libcublasLt.so.12"] {
        assert!(runtime.contains(lib), "{lib} not checked");
    }
    let user = instructions("USER");
    assert!(user.last().is_some_and(|u| u != "root" && u != "0"), "a non-root user: {user:?}");
    assert_eq!(exec_form(&instructions("ENTRYPOINT")[0]), ["tts", "serve", "--host", "0.0.0.0"]);
}

/// Every `--flag` of `words` is one `tts serve --help` lists.
fn assert_serve_flags(help: &str, words: &[String], what: &str) {
    for w in words.iter().filter(|w| w.starts_with("--")) {
        assert!(help.contains(&format!("{w} ")) || help.contains(&format!("{w} <")), "{what}: {w} is not a `tts serve` flag");
    }
}

#[test]
fn the_probes_answer_200_and_the_hpa_metric_is_exported_by_the_real_server() {
    let (dep, hpa) = (manifest("deployment.yaml"), manifest("hpa.yaml"));
    // the flags of the Deployment and the image are ones `tts serve` takes
    let scratch = common::scratch_dir("deploy-help");
    let mut cmd = common::tts_command(&scratch);
    cmd.args(["serve", "--help"]);
    let help = common::run_tts(cmd, None);
    let _ = std::fs::remove_dir_all(&scratch);
    assert_eq!(help.code, Some(0), "{}", help.stderr);
    let help = help.stdout_text();
    assert_serve_flags(&help, &args(&dep), "deployment.yaml args");
    assert_serve_flags(&help, &exec_form(instructions("CMD").last().unwrap()), "the Dockerfile's CMD");
    assert_serve_flags(&help, &exec_form(&instructions("ENTRYPOINT")[0]), "the Dockerfile's ENTRYPOINT");

    let model = generate_model_dir();
    let server = ServerProcess::spawn(&model, &[], None);
    for probe in ["readinessProbe", "livenessProbe"] {
        let path = container(&dep)[probe]["httpGet"]["path"].as_str().expect("an httpGet probe");
        let r = get(server.addr, path).unwrap_or_else(|e| panic!("{probe} {path}: {e}"));
        assert_eq!(r.status, 200, "{probe} {path}");
    }
    assert_eq!(str_at(&container(&dep)["readinessProbe"], "httpGet.path"), "/ready");
    assert_eq!(str_at(&container(&dep)["livenessProbe"], "httpGet.path"), "/health");
    let scrape_path = at(&dep, "spec.template.metadata.annotations")["prometheus.io/path"].as_str().expect("a scrape path");
    let metrics = get(server.addr, scrape_path).unwrap();
    assert_eq!(metrics.status, 200);
    let text = String::from_utf8(metrics.body).unwrap();

    let metric_list = at(&hpa, "spec.metrics").as_vec().expect("metrics");
    assert_eq!(metric_list.len(), 1);
    assert_eq!(str_at(&metric_list[0], "type"), "Pods");
    let name = str_at(&metric_list[0], "pods.metric.name");
    assert!(text.contains(&format!("# TYPE {name} gauge\n")), "{name} is not a gauge of /metrics:\n{text}");
    assert!(text.lines().any(|l| l.strip_prefix(name).is_some_and(|v| v.starts_with(' '))), "no {name} sample:\n{text}");
    assert_eq!(str_at(&metric_list[0], "pods.target.type"), "AverageValue");
    // the adapter rule in the HPA's comment names the same series
    let hpa_text = read("deploy/k8s/hpa.yaml");
    assert!(hpa_text.contains(&format!("seriesQuery: '{name}{{")), "the adapter rule's seriesQuery names {name}");
    assert!(hpa_text.contains(&format!("as: \"{name}\"")), "the adapter rule exposes {name}");

    let (code, err) = server.terminate();
    assert_eq!(code, Some(0), "{err}");
    let _ = std::fs::remove_dir_all(&model);
}

#[test]
fn the_dockerignore_keeps_build_output_out_of_the_context() {
    let ignore = read(".dockerignore");
    let entries: Vec<&str> = ignore.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
    for must in ["target/", ".cache/"] {
        assert!(entries.contains(&must), "{must} not in .dockerignore");
    }
    assert!(Path::new(&repo().join("deploy/Dockerfile")).is_file());
}
