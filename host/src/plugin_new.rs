//! `aviary plugin new <name>`: write a new bot crate, ready to build for
//! wasm32-wasip2 and to pass its own unit tests.
//!
//! The crate follows `plugins/echo`: a `Cargo.toml` (cdylib + rlib, its own
//! workspace, a small release profile) depending on the SDK of an Aviary
//! checkout by path, a `bot.toml` manifest with small kv and send asks, a
//! `src/lib.rs` bot that answers every message (with unit tests on
//! `aviary_sdk::testing::TestHost`), a `.gitignore` and a README. The files
//! are the templates in `host/templates/bot/`, with `@name@`, `@bot_type@`
//! and `@sdk@` filled in.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// The templates of a new bot crate: (path in the crate, text).
const TEMPLATES: [(&str, &str); 5] = [
    (
        "Cargo.toml",
        include_str!("../templates/bot/Cargo.toml.tmpl"),
    ),
    ("bot.toml", include_str!("../templates/bot/bot.toml.tmpl")),
    ("src/lib.rs", include_str!("../templates/bot/lib.rs.tmpl")),
    (
        ".gitignore",
        include_str!("../templates/bot/gitignore.tmpl"),
    ),
    ("README.md", include_str!("../templates/bot/README.md.tmpl")),
];

/// Names the `src/lib.rs` template uses for other things than the bot's
/// type: a bot whose type name would be one of them gets `Bot` appended.
const TAKEN_TYPE_NAMES: &[&str] = &[
    "Bot",
    "ContactAdded",
    "Default",
    "Event",
    "Host",
    "Message",
    "Ok",
    "Result",
    "Sent",
    "Some",
    "String",
    "TestHost",
    "Timer",
];

/// Names a crate cannot take: Rust keywords (its library would be named
/// after one), the built-in libraries, and the SDK's own crates (which the
/// new crate depends on).
const RESERVED_NAMES: &[&str] = &[
    "Self",
    "abstract",
    "alloc",
    "as",
    "async",
    "aviary_rules",
    "aviary_sdk",
    "await",
    "become",
    "box",
    "break",
    "const",
    "continue",
    "core",
    "crate",
    "do",
    "dyn",
    "else",
    "enum",
    "extern",
    "false",
    "final",
    "fn",
    "for",
    "gen",
    "if",
    "impl",
    "in",
    "let",
    "loop",
    "macro",
    "match",
    "mod",
    "move",
    "mut",
    "override",
    "priv",
    "proc_macro",
    "pub",
    "ref",
    "return",
    "self",
    "static",
    "std",
    "struct",
    "super",
    "test",
    "trait",
    "true",
    "try",
    "type",
    "typeof",
    "unsafe",
    "unsized",
    "use",
    "virtual",
    "where",
    "while",
    "yield",
];

/// A bot crate that [`create`] wrote.
#[derive(Debug)]
pub struct Created {
    /// The bot's id, which is also its crate's name.
    pub name: String,
    /// The crate's directory, absolute.
    pub dir: PathBuf,
    /// The SDK directory its `aviary-sdk` dependency points at, absolute.
    pub sdk: PathBuf,
    /// The files written, relative to [`dir`](Self::dir).
    pub files: Vec<PathBuf>,
}

impl Created {
    /// What was created and the commands that come next, for the terminal.
    pub fn summary(&self) -> String {
        let files: Vec<String> = self.files.iter().map(|f| f.display().to_string()).collect();
        format!(
            "created bot `{name}` in {dir}: {files}\n\
             (aviary-sdk from {sdk})\n\
             \n\
             next:\n  \
             cd {dir} && cargo test\n  \
             aviary plugin install .              # build it and load it into the running host\n  \
             aviary policy approve {name} 0.1.0   # unless a grant already covers bot.toml's asks\n",
            name = self.name,
            dir = self.dir.display(),
            files = files.join(", "),
            sdk = self.sdk.display(),
        )
    }
}

/// Writes the bot crate `<parent>/<name>` (`parent` defaults to the current
/// directory) whose `aviary-sdk` dependency is `sdk` (default: the SDK of
/// the checkout this binary was built from, see [`find_sdk`]).
///
/// Refuses an invalid `name` (see [`validate_name`]) and a target that
/// exists and is not an empty directory. The files are written into a
/// staging directory beside the target and moved into place at the end, so
/// a failure leaves no half-written crate behind.
pub fn create(name: &str, parent: Option<&Path>, sdk: Option<&Path>) -> Result<Created> {
    validate_name(name)?;
    let sdk = find_sdk(sdk)?;
    let parent = parent.unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)
        .with_context(|| format!("cannot create the directory {}", parent.display()))?;
    let parent = std::fs::canonicalize(parent)
        .with_context(|| format!("cannot resolve the directory {}", parent.display()))?;
    let dir = parent.join(name);
    check_target(&dir)?;

    let files = render(name, &sdk)?;
    let staging = parent.join(format!(".{name}.aviary-new-{}", std::process::id()));
    let written = write_files(&staging, &files).and_then(|()| {
        if dir.exists() {
            // Checked empty above; a directory cannot be renamed onto another
            // one everywhere, so make room.
            std::fs::remove_dir(&dir)
                .with_context(|| format!("cannot replace the empty directory {}", dir.display()))?;
        }
        std::fs::rename(&staging, &dir)
            .with_context(|| format!("cannot move the new crate to {}", dir.display()))
    });
    if let Err(error) = written {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(error);
    }
    Ok(Created {
        name: name.to_owned(),
        dir,
        sdk,
        files: files.into_iter().map(|(path, _)| path).collect(),
    })
}

/// Checks that `name` can be both a bot id (the host's rule,
/// [`crate::ids::is_valid_id`]) and a cargo package name: ASCII letters,
/// digits, `-` and `_`, starting with a letter, and not a Rust keyword, a
/// built-in library or one of the SDK's crates.
pub fn validate_name(name: &str) -> Result<()> {
    if name.is_empty() {
        bail!("the bot name is empty: give one such as `greeter`");
    }
    if !crate::ids::is_valid_id(name) {
        bail!(
            "`{name}` is not a valid bot id: use 1 to {} letters, digits, `-` or `_`",
            aviary_rules::ids::MAX_ID_BYTES
        );
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_')))
    {
        bail!(
            "`{name}` cannot name a cargo package: `{bad}` is not allowed; use only letters, digits, `-` and `_`"
        );
    }
    if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        bail!("`{name}` cannot name a cargo package: it must start with a letter");
    }
    let library = name.replace('-', "_");
    if RESERVED_NAMES.contains(&library.as_str()) {
        bail!(
            "`{name}` cannot name a bot crate: it is a Rust keyword, a built-in library or an Aviary SDK crate; choose another name"
        );
    }
    Ok(())
}

/// The SDK directory a new crate depends on, absolute: `sdk` when given
/// (from `--sdk` or `AVIARY_SDK`), else `sdk/` of the Aviary checkout this
/// binary was built from. Fails, naming `--sdk`, when the directory holds
/// no `aviary-sdk` crate.
pub fn find_sdk(sdk: Option<&Path>) -> Result<PathBuf> {
    let (dir, origin) = match sdk {
        Some(dir) => (dir.to_path_buf(), "given".to_owned()),
        None => {
            let checkout = built_from_checkout();
            (
                checkout.join("sdk"),
                format!(
                    "of the checkout {} this binary was built from",
                    checkout.display()
                ),
            )
        }
    };
    let manifest = dir.join("Cargo.toml");
    let is_sdk = std::fs::read_to_string(&manifest)
        .ok()
        .and_then(|text| text.parse::<toml::Table>().ok())
        .is_some_and(|table| {
            table
                .get("package")
                .and_then(|package| package.get("name"))
                .and_then(toml::Value::as_str)
                == Some("aviary-sdk")
        });
    if !is_sdk {
        bail!(
            "no Aviary SDK in {} (the SDK directory {origin}): there is no Cargo.toml of package `aviary-sdk`; \
             pass the `sdk/` directory of an Aviary checkout with --sdk <path> (or AVIARY_SDK)",
            dir.display()
        );
    }
    std::fs::canonicalize(&dir).with_context(|| format!("cannot resolve {}", dir.display()))
}

/// The Aviary checkout the host crate was compiled in (the parent of its
/// `host/` directory).
fn built_from_checkout() -> PathBuf {
    let host = Path::new(env!("CARGO_MANIFEST_DIR"));
    host.parent().unwrap_or(host).to_path_buf()
}

/// The files of the bot crate `name` depending on the SDK at `sdk`:
/// (path in the crate, contents).
pub fn render(name: &str, sdk: &Path) -> Result<Vec<(PathBuf, String)>> {
    validate_name(name)?;
    let sdk = sdk
        .to_str()
        .with_context(|| format!("the SDK path {} is not UTF-8", sdk.display()))?;
    // A TOML string, quoted and escaped.
    let sdk = toml::Value::String(sdk.to_owned()).to_string();
    let bot_type = bot_type_name(name);
    Ok(TEMPLATES
        .iter()
        .map(|(path, template)| {
            let text = template
                .replace("@name@", name)
                .replace("@bot_type@", &bot_type)
                .replace("@sdk@", &sdk);
            (PathBuf::from(path), text)
        })
        .collect())
}

/// The Rust type name of bot `name`: its `-`/`_` separated parts
/// capitalised and joined (`my-bot` → `MyBot`), with `Bot` appended when
/// the template already uses that name (`host` → `HostBot`).
pub fn bot_type_name(name: &str) -> String {
    let mut type_name: String = name
        .split(['-', '_'])
        .flat_map(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .map(|first| first.to_ascii_uppercase())
                .into_iter()
                .chain(chars.map(|c| c.to_ascii_lowercase()))
        })
        .collect();
    if TAKEN_TYPE_NAMES.contains(&type_name.as_str()) {
        type_name.push_str("Bot");
    }
    type_name
}

/// Refuses a target that exists and is not an empty directory.
fn check_target(dir: &Path) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    if !dir.is_dir() {
        bail!(
            "{} already exists and is not a directory: choose another name or --dir, or remove it",
            dir.display()
        );
    }
    let mut entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    if entries.next().is_some() {
        bail!(
            "{} already exists and is not empty: choose another name or --dir, or remove the directory",
            dir.display()
        );
    }
    Ok(())
}

/// Writes `files` under `dir`, which must not exist yet.
fn write_files(dir: &Path, files: &[(PathBuf, String)]) -> Result<()> {
    std::fs::create_dir(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for (path, text) in files {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An SDK directory as [`find_sdk`] accepts it.
    fn fake_sdk(dir: &Path) -> PathBuf {
        let sdk = dir.join("sdk");
        std::fs::create_dir_all(&sdk).unwrap();
        std::fs::write(
            sdk.join("Cargo.toml"),
            "[package]\nname = \"aviary-sdk\"\nversion = \"0.1.0\"\n",
        )
        .unwrap();
        sdk
    }

    fn file<'a>(files: &'a [(PathBuf, String)], path: &str) -> &'a str {
        &files
            .iter()
            .find(|(p, _)| p == Path::new(path))
            .unwrap_or_else(|| panic!("no {path} rendered"))
            .1
    }

    #[test]
    fn renders_every_placeholder() {
        let files = render("greeter", Path::new("/opt/aviary/sdk")).unwrap();
        let paths: Vec<&Path> = files.iter().map(|(p, _)| p.as_path()).collect();
        assert_eq!(
            paths,
            [
                "Cargo.toml",
                "bot.toml",
                "src/lib.rs",
                ".gitignore",
                "README.md"
            ]
            .map(Path::new)
        );
        for (path, text) in &files {
            assert!(
                !text.contains('@'),
                "{} keeps a placeholder:\n{text}",
                path.display()
            );
        }
        let lib = file(&files, "src/lib.rs");
        assert!(lib.contains("pub struct Greeter;"), "{lib}");
        assert!(lib.contains("aviary_sdk::export_bot!(Greeter);"), "{lib}");
        assert!(lib.contains("\"greeter heard #1: hello\""), "{lib}");
        assert!(
            lib.contains("#[cfg(test)]") && lib.contains("TestHost"),
            "{lib}"
        );
        assert_eq!(file(&files, ".gitignore"), "target/\n");
        let readme = file(&files, "README.md");
        assert!(readme.starts_with("# greeter\n"), "{readme}");
        assert!(readme.contains("aviary plugin build .") && readme.contains("cargo test"));
    }

    #[test]
    fn cargo_toml_is_its_own_workspace_with_a_path_to_the_sdk() {
        let files = render("my-bot", Path::new("/opt/a \"quoted\" dir/sdk")).unwrap();
        let cargo: toml::Table = file(&files, "Cargo.toml").parse().unwrap();
        assert_eq!(cargo["package"]["name"].as_str(), Some("my-bot"));
        assert_eq!(
            cargo["lib"]["crate-type"],
            toml::Value::Array(vec!["cdylib".into(), "rlib".into()])
        );
        assert_eq!(
            cargo["dependencies"]["aviary-sdk"]["path"].as_str(),
            Some("/opt/a \"quoted\" dir/sdk"),
            "the path survives TOML quoting"
        );
        assert_eq!(cargo["workspace"], toml::Value::Table(toml::Table::new()));
        assert_eq!(cargo["profile"]["release"]["lto"].as_bool(), Some(true));
        assert_eq!(cargo["profile"]["release"]["strip"].as_bool(), Some(true));
    }

    #[test]
    fn bot_toml_is_a_manifest_the_host_reads() {
        let dir = tempfile::tempdir().unwrap();
        let files = render("my-bot", Path::new("/sdk")).unwrap();
        let path = dir.path().join("bot.toml");
        std::fs::write(&path, file(&files, "bot.toml")).unwrap();
        let manifest = crate::runtime::Manifest::read(&path).unwrap();
        assert_eq!(
            (manifest.id.as_str(), manifest.version.as_str()),
            ("my-bot", "0.1.0")
        );
        assert!(!manifest.description.is_empty());
        let kv = manifest.asks.kv.expect("asks kv");
        assert_eq!((kv.max_bytes, kv.max_keys), (65536, 1000));
        let send = manifest.asks.send.expect("asks send");
        assert_eq!(
            (send.per_conversation_per_minute, send.per_bot_per_minute),
            (60, 600)
        );
    }

    #[test]
    fn type_names_are_camel_case_and_never_clash_with_the_template() {
        assert_eq!(bot_type_name("greeter"), "Greeter");
        assert_eq!(bot_type_name("my-bot"), "MyBot");
        assert_eq!(bot_type_name("my_cool-bot2"), "MyCoolBot2");
        assert_eq!(bot_type_name("a--b_"), "AB");
        assert_eq!(bot_type_name("HTTP"), "Http");
        assert_eq!(bot_type_name("host"), "HostBot");
        assert_eq!(bot_type_name("test_host"), "TestHostBot");
        assert_eq!(bot_type_name("bot"), "BotBot");
        // Every capitalised name the template uses is known as taken, so no
        // bot type can shadow one.
        let code = TEMPLATES[2]
            .1
            .lines()
            .filter(|line| !line.trim_start().starts_with("//"));
        let words =
            code.flat_map(|line| line.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')));
        for word in words {
            if word.starts_with(|c: char| c.is_ascii_uppercase())
                && word.chars().any(|c| c.is_ascii_lowercase())
            {
                assert!(
                    TAKEN_TYPE_NAMES.contains(&word),
                    "the template uses `{word}`: add it to TAKEN_TYPE_NAMES"
                );
            }
        }
    }

    #[test]
    fn names_follow_the_id_and_cargo_rules() {
        for good in ["greeter", "my-bot", "my_bot", "Bot2", "a", &"a".repeat(128)] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
        let refused = |name: &str| format!("{:#}", validate_name(name).unwrap_err());
        assert!(refused("").contains("empty"));
        assert!(refused("my bot").contains("not a valid bot id"));
        assert!(refused("a/b").contains("not a valid bot id"));
        assert!(refused(&"a".repeat(129)).contains("not a valid bot id"));
        assert!(refused("my.bot").contains("`.` is not allowed"));
        assert!(refused("my:bot").contains("`:` is not allowed"));
        assert!(refused("1bot").contains("start with a letter"));
        assert!(refused("-bot").contains("start with a letter"));
        assert!(refused("_bot").contains("start with a letter"));
        for reserved in [
            "fn",
            "self",
            "test",
            "std",
            "core",
            "aviary-sdk",
            "aviary_rules",
        ] {
            assert!(refused(reserved).contains("Rust keyword"), "{reserved}");
        }
        assert!(
            render("bad name", Path::new("/sdk")).is_err(),
            "render validates too"
        );
    }

    #[test]
    fn creates_the_crate_in_the_parent_dir() {
        let dir = tempfile::tempdir().unwrap();
        let sdk = fake_sdk(dir.path());
        let parent = dir.path().join("new/parent");
        let created = create("greeter", Some(&parent), Some(&sdk)).unwrap();
        let parent = std::fs::canonicalize(&parent).unwrap();
        assert_eq!(created.dir, parent.join("greeter"));
        assert_eq!(created.sdk, std::fs::canonicalize(&sdk).unwrap());
        assert_eq!(created.files.len(), TEMPLATES.len());
        for file in &created.files {
            assert!(created.dir.join(file).is_file(), "{}", file.display());
        }
        let cargo: toml::Table = std::fs::read_to_string(created.dir.join("Cargo.toml"))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(
            cargo["dependencies"]["aviary-sdk"]["path"].as_str(),
            created.sdk.to_str()
        );
        let entries: Vec<_> = std::fs::read_dir(&parent)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(entries, ["greeter"], "no staging directory is left");
        let summary = created.summary();
        assert!(summary.contains(&format!("cd {} && cargo test", created.dir.display())));
        assert!(summary.contains("aviary plugin install ."));
        assert!(summary.contains("aviary policy approve"));
    }

    #[test]
    fn an_empty_target_dir_is_used() {
        let dir = tempfile::tempdir().unwrap();
        let sdk = fake_sdk(dir.path());
        std::fs::create_dir(dir.path().join("greeter")).unwrap();
        let created = create("greeter", Some(dir.path()), Some(&sdk)).unwrap();
        assert!(created.dir.join("src/lib.rs").is_file());
    }

    #[test]
    fn refuses_a_non_empty_target_and_leaves_it_alone() {
        let dir = tempfile::tempdir().unwrap();
        let sdk = fake_sdk(dir.path());
        let target = dir.path().join("greeter");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("notes.txt"), "mine").unwrap();
        let error = format!(
            "{:#}",
            create("greeter", Some(dir.path()), Some(&sdk)).unwrap_err()
        );
        assert!(error.contains("already exists and is not empty"), "{error}");
        assert!(error.contains("greeter"), "{error}");
        assert!(error.contains("choose another name"), "{error}");
        let entries: Vec<_> = std::fs::read_dir(&target)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(entries, ["notes.txt"]);

        std::fs::write(dir.path().join("afile"), "").unwrap();
        let error = format!(
            "{:#}",
            create("afile", Some(dir.path()), Some(&sdk)).unwrap_err()
        );
        assert!(error.contains("is not a directory"), "{error}");
    }

    #[test]
    fn a_missing_sdk_names_the_sdk_option() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nowhere");
        for sdk in [missing.clone(), dir.path().to_path_buf()] {
            let error = format!("{:#}", find_sdk(Some(&sdk)).unwrap_err());
            assert!(error.contains("--sdk"), "{error}");
            assert!(error.contains(&sdk.display().to_string()), "{error}");
        }
        let error = format!(
            "{:#}",
            create("greeter", Some(dir.path()), Some(&missing)).unwrap_err()
        );
        assert!(error.contains("--sdk"), "{error}");
        assert!(
            !dir.path().join("greeter").exists(),
            "nothing is written without an SDK"
        );
    }

    #[test]
    fn the_default_sdk_is_the_one_of_this_checkout() {
        let sdk = find_sdk(None).unwrap();
        assert!(sdk.is_absolute());
        assert_eq!(
            sdk,
            std::fs::canonicalize(Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk")).unwrap()
        );
    }
}
