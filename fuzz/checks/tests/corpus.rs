//! Replays every checked-in fuzz input through its target's check, so CI
//! keeps the corpora green without libFuzzer: `fuzz/seeds/<target>/` (named
//! inputs, and every input that once made a target fail) and
//! `fuzz/corpus/<target>/` (the minimised corpus the fuzzer grew). Also
//! checks that the target list, the cargo-fuzz binaries and the directories
//! agree, so a target cannot be half added.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use fuzz_checks::TARGETS;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("fuzz/checks has a parent")
        .to_path_buf()
}

/// The files of `dir`, sorted; none if it does not exist.
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .map(|e| e.expect("readable directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out
}

/// The names of the subdirectories (or, with `ext`, of the files with that
/// extension, without it) of `dir`.
fn names(dir: &Path, ext: Option<&str>) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("readable directory entry").path())
        .filter(|p| match ext {
            None => p.is_dir(),
            Some(x) => p.extension().is_some_and(|e| e == x),
        })
        .map(|p| {
            p.file_stem()
                .expect("a name")
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

#[test]
fn every_checked_in_input_passes_its_check() {
    let fuzz = fuzz_dir();
    for target in TARGETS {
        let seeds = files(&fuzz.join("seeds").join(target.name));
        assert!(
            !seeds.is_empty(),
            "{}: no seeds in fuzz/seeds/{}",
            target.name,
            target.name
        );
        let corpus = files(&fuzz.join("corpus").join(target.name));
        let mut failed = Vec::new();
        for path in seeds.iter().chain(&corpus) {
            let data = std::fs::read(path).expect("readable input");
            if std::panic::catch_unwind(|| (target.check)(&data)).is_err() {
                failed.push(path.display().to_string());
            }
        }
        assert!(
            failed.is_empty(),
            "{}: {} of {} inputs fail:\n{}",
            target.name,
            failed.len(),
            seeds.len() + corpus.len(),
            failed.join("\n")
        );
    }
}

#[test]
fn targets_binaries_and_directories_agree() {
    let fuzz = fuzz_dir();
    let listed: BTreeSet<String> = TARGETS.iter().map(|t| t.name.to_owned()).collect();
    assert_eq!(
        listed.len(),
        TARGETS.len(),
        "a target is listed twice in TARGETS"
    );
    assert_eq!(
        names(&fuzz.join("fuzz_targets"), Some("rs")),
        listed,
        "fuzz/fuzz_targets/*.rs"
    );
    assert_eq!(names(&fuzz.join("seeds"), None), listed, "fuzz/seeds/*/");
    let corpus = fuzz.join("corpus");
    if corpus.exists() {
        let grown = names(&corpus, None);
        assert!(grown.is_subset(&listed), "fuzz/corpus/{grown:?}");
    }
    let manifest = std::fs::read_to_string(fuzz.join("Cargo.toml")).expect("fuzz/Cargo.toml");
    for name in &listed {
        let bin = format!("name = \"{name}\"\npath = \"fuzz_targets/{name}.rs\"");
        assert!(
            manifest.contains(&bin),
            "fuzz/Cargo.toml has no [[bin]] for {name}"
        );
    }
}
