//! Golden tests of the `weir` command line against the manifests in `tests/manifests`.
//!
//! Every `valid/*.yaml` must pass `weir validate`. Every `invalid/*.yaml` must fail
//! with exit code 2 and print exactly the lines of its sibling `<name>.expected`,
//! where `{file}` stands for the path given on the command line and `{dir}` for
//! that path's directory (files the manifest names are resolved against it).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Fewer invalid manifests than this means the directory was not found or emptied.
const MIN_INVALID_MANIFESTS: usize = 15;

/// Fewer valid manifests than this means the directory was not found or emptied.
const MIN_VALID_MANIFESTS: usize = 5;

/// The invalid manifest with many different problems, used to check `weir run`.
const MULTI_ERROR_MANIFEST: &str = "many_errors.yaml";

/// How long `weir run` may take to give up on a broken manifest.
const RUN_TIMEOUT: Duration = Duration::from_secs(30);

/// How long `weir validate` may take to refuse a file it must not read (it
/// needs milliseconds; reading `/dev/zero` or opening a FIFO never ends).
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(10);

/// Routes in the generated large manifest.
const MANY_ROUTES: usize = 100_000;

/// The directory of this package; commands run from here so paths stay short.
fn package_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `tests/manifests`, relative to [`package_dir`].
fn manifests_dir() -> PathBuf {
    PathBuf::from("../tests/manifests")
}

/// A `weir` command run from [`package_dir`], unaffected by the caller's `WEIR_*` variables.
fn weir() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_weir"));
    command
        .current_dir(package_dir())
        .env_remove("WEIR_CONFIG")
        .env_remove("WEIR_WORKERS")
        .env_remove("WEIR_LOG_FORMAT")
        .env("WEIR_LOG", "warn")
        .env("WEIR_CACHE_DIR", "none")
        .stdin(Stdio::null());
    command
}

/// Runs `weir validate <path>`.
fn validate(path: &Path) -> Output {
    weir()
        .arg("validate")
        .arg(path)
        .output()
        .expect("the weir binary should start")
}

/// The `*.yaml` files in `manifests/<kind>`, sorted, as paths relative to [`package_dir`].
fn manifests(kind: &str) -> Vec<PathBuf> {
    let dir = manifests_dir().join(kind);
    let entries = std::fs::read_dir(package_dir().join(&dir))
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|entry| {
            entry
                .expect("a directory entry should be readable")
                .file_name()
        })
        .filter(|name| Path::new(name).extension().is_some_and(|ext| ext == "yaml"))
        .map(|name| dir.join(name))
        .collect();
    files.sort();
    files
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The expected stderr of `weir validate <manifest>`, placeholders filled in
/// (`{file}`, `{dir}`, and `{builtins}`: the names of this build's built-ins).
fn expected_errors(manifest: &Path) -> String {
    let golden = package_dir().join(manifest.with_extension("expected"));
    let text = std::fs::read_to_string(&golden).unwrap_or_else(|e| {
        panic!(
            "{} has no golden file {}: {e}",
            manifest.display(),
            golden.display()
        )
    });
    let dir = manifest.parent().unwrap_or(Path::new(""));
    text.replace("{file}", &manifest.display().to_string())
        .replace("{dir}", &dir.display().to_string())
        .replace("{builtins}", &weir::builtins::names())
}

/// A line diff of `expected` against `actual`: `-` only expected, `+` only actual.
fn diff(expected: &str, actual: &str) -> String {
    let old: Vec<&str> = expected.lines().collect();
    let new: Vec<&str> = actual.lines().collect();
    // lcs[i][j]: length of the longest common subsequence of old[i..] and new[j..].
    let mut lcs = vec![vec![0usize; new.len() + 1]; old.len() + 1];
    for i in (0..old.len()).rev() {
        for j in (0..new.len()).rev() {
            lcs[i][j] = if old[i] == new[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = String::new();
    while i < old.len() || j < new.len() {
        if i < old.len() && j < new.len() && old[i] == new[j] {
            out.push_str(&format!("  {}\n", old[i]));
            i += 1;
            j += 1;
        } else if i < old.len() && (j == new.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            out.push_str(&format!("- {}\n", old[i]));
            i += 1;
        } else {
            out.push_str(&format!("+ {}\n", new[j]));
            j += 1;
        }
    }
    if expected.ends_with('\n') != actual.ends_with('\n') {
        out.push_str("(the two differ in their final newline)\n");
    }
    out
}

#[test]
fn every_valid_manifest_validates() {
    let files = manifests("valid");
    assert!(
        files.len() >= MIN_VALID_MANIFESTS,
        "expected at least {MIN_VALID_MANIFESTS} valid manifests in {}, found {}",
        manifests_dir().join("valid").display(),
        files.len()
    );
    let mut failures = Vec::new();
    for file in &files {
        let output = validate(file);
        let out = stdout(&output);
        let ok_prefix = format!("{}: ok (", file.display());
        if output.status.code() != Some(0) || !out.starts_with(&ok_prefix) {
            failures.push(format!(
                "{}: exit {:?}\nstdout:\n{out}stderr:\n{}",
                file.display(),
                output.status.code(),
                stderr(&output)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} valid manifests were rejected:\n\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}

#[test]
fn every_invalid_manifest_lists_all_errors() {
    let files = manifests("invalid");
    assert!(
        files.len() >= MIN_INVALID_MANIFESTS,
        "expected at least {MIN_INVALID_MANIFESTS} invalid manifests in {}, found {}",
        manifests_dir().join("invalid").display(),
        files.len()
    );
    let mut failures = Vec::new();
    for file in &files {
        let expected = expected_errors(file);
        assert!(
            !expected.trim().is_empty(),
            "{} is empty",
            file.with_extension("expected").display()
        );
        let output = validate(file);
        let actual = stderr(&output);
        let code = output.status.code();
        if code != Some(2) || actual != expected {
            failures.push(format!(
                "{}: {}stderr diff (- expected, + actual):\n{}",
                file.display(),
                if code == Some(2) {
                    String::new()
                } else {
                    format!("exit code {code:?}, expected 2; ")
                },
                diff(&expected, &actual)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} invalid manifests did not print their golden errors \
         (rerun `weir validate` on them from {}):\n\n{}",
        failures.len(),
        files.len(),
        package_dir().display(),
        failures.join("\n")
    );
}

#[test]
fn every_golden_file_has_a_manifest() {
    let dir = manifests_dir().join("invalid");
    let entries = std::fs::read_dir(package_dir().join(&dir))
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
    let orphans: Vec<String> = entries
        .map(|entry| entry.expect("a directory entry should be readable").path())
        .filter(|p| p.extension().is_some_and(|ext| ext == "expected"))
        .filter(|p| !p.with_extension("yaml").is_file())
        .map(|p| p.display().to_string())
        .collect();
    assert!(
        orphans.is_empty(),
        "golden files without a manifest: {orphans:?}"
    );
}

/// Runs `command` to its end: `Ok` with its output, or `Err` with the output
/// so far when it was still running after `limit` (it is killed then).
fn output_within(mut command: Command, limit: Duration) -> Result<Output, Output> {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the weir binary should start");
    let deadline = Instant::now() + limit;
    loop {
        if child
            .try_wait()
            .expect("waiting on weir should work")
            .is_some()
        {
            return Ok(child
                .wait_with_output()
                .expect("weir's output should be readable"));
        }
        if Instant::now() > deadline {
            child.kill().expect("a running weir should be killable");
            return Err(child
                .wait_with_output()
                .expect("weir's output should be readable"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for `weir run` to exit, killing it (and failing) if it starts serving instead.
fn run_to_exit(command: Command) -> Output {
    output_within(command, RUN_TIMEOUT).unwrap_or_else(|output| {
        panic!(
            "`weir run` was still running after {RUN_TIMEOUT:?}; it accepted a broken manifest.\n\
             stderr:\n{}",
            stderr(&output)
        )
    })
}

/// Asserts that `weir run` failed and printed every line `weir validate` prints for `manifest`.
fn assert_run_reports(output: &Output, manifest: &Path) {
    let actual = stderr(output);
    assert!(
        !output.status.success() && output.status.code().is_some(),
        "`weir run` with {} should exit non-zero, got {:?}; stderr:\n{actual}",
        manifest.display(),
        output.status
    );
    let expected = expected_errors(manifest);
    let missing: Vec<&str> = expected
        .lines()
        .filter(|line| !actual.lines().any(|a| a == *line))
        .collect();
    assert!(
        missing.is_empty(),
        "`weir run` with {} did not print {} of the {} expected lines:\n{}\n\nstderr was:\n{actual}",
        manifest.display(),
        missing.len(),
        expected.lines().count(),
        missing.join("\n")
    );
}

#[test]
fn run_rejects_a_broken_manifest_with_every_error() {
    let manifest = manifests_dir().join("invalid").join(MULTI_ERROR_MANIFEST);
    assert!(
        expected_errors(&manifest).lines().count() >= 4,
        "{} should have several errors",
        manifest.display()
    );
    let mut command = weir();
    command.arg("run").arg("--config").arg(&manifest);
    let output = run_to_exit(command);
    assert_run_reports(&output, &manifest);
}

#[test]
fn run_and_validate_read_flags_from_env() {
    let valid = manifests_dir().join("valid").join("minimal.yaml");
    let output = weir()
        .arg("validate")
        .env("WEIR_CONFIG", &valid)
        .output()
        .expect("the weir binary should start");
    assert_eq!(
        output.status.code(),
        Some(0),
        "WEIR_CONFIG={} weir validate failed; stderr:\n{}",
        valid.display(),
        stderr(&output)
    );
    assert!(
        stdout(&output).starts_with(&format!("{}: ok (", valid.display())),
        "weir validate should name the file from WEIR_CONFIG; stdout:\n{}",
        stdout(&output)
    );

    // `run` reads the same variable: a broken manifest named there is rejected.
    let broken = manifests_dir().join("invalid").join(MULTI_ERROR_MANIFEST);
    let mut command = weir();
    command.arg("run").env("WEIR_CONFIG", &broken);
    let output = run_to_exit(command);
    assert_run_reports(&output, &broken);
}

#[test]
fn validate_reports_a_missing_file() {
    let missing = manifests_dir().join("no-such-manifest.yaml");
    assert!(
        !package_dir().join(&missing).exists(),
        "{} should not exist",
        missing.display()
    );
    let output = validate(&missing);
    let err = stderr(&output);
    assert!(
        !output.status.success(),
        "weir validate on a missing file should fail; stdout:\n{}",
        stdout(&output)
    );
    assert_eq!(
        err,
        format!("{}: the manifest does not exist\n", missing.display())
    );
}

/// Runs `weir validate <path>` and checks it fails within [`REFUSAL_TIMEOUT`]
/// with exit code 2 and exactly `expected` on stderr.
fn assert_refused(path: &Path, expected: &str) {
    let started = Instant::now();
    let mut command = weir();
    command.arg("validate").arg(path);
    let output = output_within(command, REFUSAL_TIMEOUT).unwrap_or_else(|output| {
        panic!(
            "`weir validate {}` still ran after {REFUSAL_TIMEOUT:?}; stderr:\n{}",
            path.display(),
            stderr(&output)
        )
    });
    assert_eq!(
        (output.status.code(), stderr(&output).as_str()),
        (Some(2), expected),
        "`weir validate {}` after {:?}",
        path.display(),
        started.elapsed()
    );
}

/// Makes a FIFO at `path` (nothing ever writes to it: opening it would block).
fn make_fifo(path: &Path) {
    let status = Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("mkfifo should run");
    assert!(status.success(), "mkfifo {} failed", path.display());
}

/// A sparse file of `size` bytes at `path`: no disk used, nothing to read.
fn make_sparse(path: &Path, size: u64) {
    std::fs::File::create(path)
        .and_then(|file| file.set_len(size))
        .unwrap_or_else(|e| panic!("cannot make the sparse file {}: {e}", path.display()));
}

#[test]
fn validate_refuses_dev_zero_without_reading_it() {
    assert_refused(
        Path::new("/dev/zero"),
        "/dev/zero: the manifest is not a regular file (a character device)\n",
    );
}

#[test]
fn validate_refuses_a_fifo_and_a_directory_without_opening_them() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let fifo = dir.path().join("weir.yaml");
    make_fifo(&fifo);
    assert_refused(
        &fifo,
        &format!(
            "{}: the manifest is not a regular file (a FIFO)\n",
            fifo.display()
        ),
    );
    assert_refused(
        dir.path(),
        &format!(
            "{}: the manifest is not a regular file (a directory)\n",
            dir.path().display()
        ),
    );
}

#[test]
fn validate_refuses_a_manifest_over_the_size_cap_without_reading_it() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let manifest = dir.path().join("weir.yaml");
    let size = weir::config::MAX_MANIFEST_BYTES + 1;
    make_sparse(&manifest, size);
    assert_refused(
        &manifest,
        &format!(
            "{}: the manifest is {size} bytes, over the 64MiB cap\n",
            manifest.display()
        ),
    );
}

#[test]
fn validate_refuses_plugin_files_that_are_fifos_or_over_the_cap() {
    let dir = tempfile::tempdir().expect("a temp dir");
    make_fifo(&dir.path().join("fifo.wasm"));
    let size = weir::config::MAX_PLUGIN_BYTES + 1;
    make_sparse(&dir.path().join("huge.wasm"), size);
    let manifest = dir.path().join("weir.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: weir/v1\n\
         listeners: [{ name: main, address: 127.0.0.1:0 }]\n\
         plugins:\n\
         \x20 - { name: pipe, file: fifo.wasm }\n\
         \x20 - { name: huge, file: huge.wasm }\n\
         routes: [{ name: r, respond: { body: x } }]\n",
    )
    .expect("write the manifest");
    let (file, dir) = (manifest.display(), dir.path().display());
    assert_refused(
        &manifest,
        &format!(
            "{file}:4:25: plugin file `{dir}/fifo.wasm` is not a regular file (a FIFO)\n\
             {file}:5:25: plugin file `{dir}/huge.wasm` is {size} bytes, over the 256MiB cap\n"
        ),
    );
}

/// A manifest of `routes` routes over 100 hosts, each with its own prefix,
/// every tenth an exact path and methods instead.
fn many_routes(routes: usize) -> String {
    let mut text = String::from(
        "apiVersion: weir/v1\n\
         listeners: [{ name: main, address: 127.0.0.1:0 }]\n\
         upstreams: [{ name: app, targets: [127.0.0.1:3001] }]\n\
         routes:\n",
    );
    for i in 0..routes {
        let path = if i % 10 == 9 {
            format!("{{ exact: /v1/svc{i}/healthz }}, methods: [GET]")
        } else {
            format!("{{ prefix: /v1/svc{i} }}")
        };
        text.push_str(&format!(
            "  - {{ name: r{i}, match: {{ hosts: [t{}.example.com], path: {path} }}, upstream: app }}\n",
            i % 100
        ));
    }
    text
}

#[test]
fn validate_loads_a_manifest_of_100_000_routes() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let manifest = dir.path().join("weir.yaml");
    std::fs::write(&manifest, many_routes(MANY_ROUTES)).expect("write the manifest");
    let started = Instant::now();
    let output = validate(&manifest);
    assert_eq!(
        (output.status.code(), stdout(&output)),
        (
            Some(0),
            format!(
                "{}: ok (1 listener, 1 upstream, {MANY_ROUTES} routes)\n",
                manifest.display()
            )
        ),
        "stderr:\n{}",
        stderr(&output)
    );
    eprintln!("{MANY_ROUTES} routes validated in {:?}", started.elapsed());
}

/// Runs `weir plugins list` with `args`.
fn plugins_list(args: &[&str]) -> Output {
    weir()
        .args(["plugins", "list"])
        .args(args)
        .env_remove("WEIR_ADMIN_URL")
        .output()
        .expect("the weir binary should start")
}

#[test]
fn plugins_list_shows_the_builtins_without_a_gateway() {
    // No admin API answers anywhere: the list comes from the binary itself.
    let output = plugins_list(&["--admin-url", "http://127.0.0.1:1"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["NAME", "VERSION", "BYTES", "SHA256", "DESCRIPTION"]
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split_whitespace().collect()).collect();
    let names: Vec<&str> = rows.iter().map(|r| r[0]).collect();
    // The built-ins' own unit test pins the list; here it is what the binary has.
    assert_eq!(names.join(", "), weir::builtins::names());
    for row in &rows {
        let [name, version, bytes, sha256, description @ ..] = &row[..] else {
            panic!("a short row: {row:?}");
        };
        // The version of the plugin's crate (plugins/ is one workspace version).
        let workspace = std::fs::read_to_string(package_dir().join("../plugins/Cargo.toml"))
            .expect("plugins/Cargo.toml");
        assert!(
            workspace.contains(&format!("\nversion = \"{version}\"\n")),
            "{name}: version {version}"
        );
        // The module the build wrote, byte for byte.
        let file = Path::new(weir::builtins::BUILD_DIR)
            .join(format!("weir_{}.wasm", name.replace('-', "_")));
        let module = std::fs::read(&file).expect("the built module");
        assert_eq!(bytes.parse::<usize>().ok(), Some(module.len()), "{name}");
        let digest: String = <sha2::Sha256 as sha2::Digest>::digest(&module)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(*sha256, digest, "{name}");
        assert!(!description.is_empty(), "{name} has a description");
    }
}

#[test]
fn plugins_list_prints_a_builtins_config_schema() {
    let output = plugins_list(&["--schema", "rate-limit"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let schema: serde_json::Value =
        serde_json::from_str(&stdout(&output)).expect("the schema is JSON");
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    assert_eq!(schema["type"], "object");
    let properties: Vec<&str> = schema["properties"]
        .as_object()
        .expect("properties")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        properties,
        [
            "limits",
            "algorithm",
            "key",
            "trusted_proxies",
            "redis",
            "headers",
            "rate",
            "burst",
            "key_header"
        ]
    );
    assert_eq!(
        schema["properties"]["limits"]["items"]["required"],
        serde_json::json!(["requests", "per"])
    );
    assert_eq!(schema["additionalProperties"], false);

    let unknown = plugins_list(&["--schema", "no-such-plugin"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert_eq!(
        stderr(&unknown),
        format!(
            "no built-in plugin `no-such-plugin`; this Weir has: {}\n",
            weir::builtins::names()
        )
    );
}

#[test]
fn the_quickstart_manifest_validates_with_no_plugin_file() {
    let quickstart = PathBuf::from("../examples/weir.yaml");
    let text = std::fs::read_to_string(package_dir().join(&quickstart)).expect("the quickstart");
    assert!(text.contains("builtin:") && !text.contains(" file:"));
    let output = validate(&quickstart);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
}

/// Every command `weir` has, as completions and the man page must name them.
const COMMANDS: [&str; 8] = [
    "run",
    "validate",
    "apply",
    "admin",
    "plugin",
    "plugins",
    "completions",
    "man",
];

/// `weir completions <shell>`, which must succeed; its stdout.
fn completions(shell: &str) -> String {
    let output = weir()
        .args(["completions", shell])
        .output()
        .expect("weir runs");
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    stdout(&output)
}

/// What bash completes for the words `line` (the last one being completed)
/// with `script` loaded, one candidate a line.
fn bash_completes(script: &Path, line: &[&str]) -> Vec<String> {
    let words = line
        .iter()
        .map(|w| format!("'{w}'"))
        .collect::<Vec<_>>()
        .join(" ");
    let program = format!(
        "source '{}'; COMP_WORDS=({words}); COMP_CWORD={}; \
         _weir weir '{}' '{}'; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script.display(),
        line.len() - 1,
        line[line.len() - 1],
        line[line.len().saturating_sub(2)],
    );
    let output = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &program])
        .output()
        .expect("bash runs");
    assert!(output.status.success(), "{}", stderr(&output));
    stdout(&output).lines().map(str::to_owned).collect()
}

#[test]
fn bash_completion_script_completes_commands_and_their_options() {
    let script = completions("bash");
    assert!(script.contains("_weir() {"), "{script}");
    assert!(script.contains("complete -F _weir"), "{script}");
    let dir = std::env::temp_dir().join(format!("weir-completions-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("weir.bash");
    std::fs::write(&file, &script).expect("write the script");

    let mut commands = bash_completes(&file, &["weir", ""]);
    commands.retain(|c| !c.starts_with('-') && c != "help");
    let mut expected = COMMANDS.map(str::to_owned).to_vec();
    expected.sort();
    commands.sort();
    assert_eq!(commands, expected);
    assert_eq!(
        bash_completes(&file, &["weir", "pl"]),
        ["plugin", "plugins"]
    );
    assert_eq!(
        bash_completes(&file, &["weir", "run", "--w"]),
        ["--workers", "--watch"]
    );
    assert_eq!(
        bash_completes(&file, &["weir", "completions", "z"]),
        ["zsh"]
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn zsh_fish_elvish_and_powershell_completions_name_every_command() {
    for (shell, opening, command_entry) in [
        ("zsh", "#compdef weir\n", "'{}:"),
        ("fish", "# Print an optspec", "-f -a \"{}\""),
        ("elvish", "\nuse builtin;\n", "cand {} "),
        (
            "powershell",
            "\nusing namespace System.Management.Automation",
            "'{}',",
        ),
    ] {
        let script = completions(shell);
        assert!(script.starts_with(opening), "{shell}: {script}");
        for command in COMMANDS {
            let entry = command_entry.replace("{}", command);
            assert!(script.contains(&entry), "{shell}: no `{entry}` in {script}");
        }
    }
    let unknown = weir()
        .args(["completions", "cmd.exe"])
        .output()
        .expect("weir runs");
    assert_eq!(unknown.status.code(), Some(2), "{}", stderr(&unknown));
    assert!(stderr(&unknown).contains("invalid value 'cmd.exe'"));
}

#[test]
fn man_prints_a_roff_page_naming_every_command_and_writes_one_per_command() {
    let output = weir().arg("man").output().expect("weir runs");
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let page = stdout(&output);
    assert!(page.contains("\n.TH weir 1 "), "{page}");
    for section in ["NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "SUBCOMMANDS"] {
        assert!(
            page.contains(&format!("\n.SH {section}\n")),
            "no {section}: {page}"
        );
    }
    assert!(page.contains("weir \\- An API gateway whose policies are Wasm filters"));
    for command in COMMANDS {
        assert!(
            page.contains(&format!("weir\\-{}(1)", command.replace('-', "\\-"))),
            "`{command}` missing from {page}"
        );
    }

    let dir = std::env::temp_dir().join(format!("weir-man-{}", std::process::id()));
    let output = weir()
        .args(["man", "--dir"])
        .arg(&dir)
        .output()
        .expect("weir runs");
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(stdout(&output), "");
    for command in COMMANDS {
        let file = dir.join(format!("weir-{command}.1"));
        let text =
            std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert!(
            text.contains(&format!("\n.TH weir-{command} 1 ")),
            "{}: {text}",
            file.display()
        );
    }
    let run = std::fs::read_to_string(dir.join("weir-run.1")).expect("weir-run.1");
    assert!(run.contains("\\-\\-config"), "{run}");
    let top = std::fs::read_to_string(dir.join("weir.1")).expect("weir.1");
    assert!(top.contains("\n.TH weir 1 "), "{top}");
    assert!(top.contains("weir\\-run(1)"), "{top}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The example manifests `examples/` must hold, each of which must validate.
const EXAMPLES: [&str; 5] = ["auth", "plugin", "rate-limit", "tls", "weir"];

/// Makes, in `dir`, the files example `name`'s header comment tells its
/// reader to make: a certificate for `tls`, the filter module for `plugin`.
fn make_example_files(name: &str, dir: &Path) {
    match name {
        "tls" => {
            let certs = dir.join("certs");
            std::fs::create_dir_all(&certs).expect("certs dir");
            let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
                .expect("a self-signed certificate");
            std::fs::write(certs.join("localhost.crt"), made.cert.pem()).expect("write cert");
            std::fs::write(
                certs.join("localhost.key"),
                made.signing_key.serialize_pem(),
            )
            .expect("write key");
        }
        "plugin" => {
            let filter = package_dir().join("../examples/filters/rust-weir-sdk");
            let mut build = Command::new("bash");
            build
                .arg(filter.join("build.sh"))
                .arg(dir.join("filters/rust-weir-sdk/out"))
                // The module builds in this package's target directory:
                // the source tree stays clean.
                .env(
                    "CARGO_TARGET_DIR",
                    Path::new(env!("CARGO_TARGET_TMPDIR")).join("example-filter-target"),
                );
            for var in ["RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", "CARGO_BUILD_TARGET"] {
                build.env_remove(var);
            }
            let output = build.output().expect("bash runs");
            assert!(
                output.status.success(),
                "building the example filter failed: {}",
                stderr(&output)
            );
        }
        _ => {}
    }
}

#[test]
fn every_example_manifest_validates_once_its_files_are_made() {
    let examples = package_dir().join("../examples");
    let mut names: Vec<String> = std::fs::read_dir(&examples)
        .expect("examples/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| {
            p.file_stem()
                .expect("a file name")
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    for name in EXAMPLES {
        assert!(names.iter().any(|n| n == name), "no examples/{name}.yaml");
    }
    for name in &names {
        // A copy in a directory of its own, where the files it names are
        // made as its comment says (examples/ itself may hold them or not).
        let dir = std::env::temp_dir().join(format!("weir-example-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let manifest = dir.join(format!("{name}.yaml"));
        std::fs::copy(examples.join(format!("{name}.yaml")), &manifest).expect("copy");
        make_example_files(name, &dir);
        let output = validate(&manifest);
        assert_eq!(
            output.status.code(),
            Some(0),
            "examples/{name}.yaml: {}",
            stderr(&output)
        );
        assert!(
            stdout(&output).starts_with(&format!("{}: ok (", manifest.display())),
            "{}",
            stdout(&output)
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn commands_printing_to_a_closed_pipe_exit_quietly() {
    for args in [
        &["plugins", "list"][..],
        &["plugins", "list", "--schema", "jwt-auth"],
        &["completions", "bash"],
        &["man"],
        &["validate", "../examples/weir.yaml"],
    ] {
        // The reader is gone before weir writes: as `weir … | head` once
        // head has read enough.
        let (reader, writer) = std::io::pipe().expect("a pipe");
        drop(reader);
        let output = weir()
            .args(args)
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .expect("weir runs");
        assert_eq!(
            (output.status.code(), stderr(&output).as_str()),
            (Some(0), ""),
            "weir {args:?}"
        );
    }
}
