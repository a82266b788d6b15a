//! Blind storage: marker strings used as file names, contents, xattr values
//! and symlink targets never appear in any byte under SOVSEAL_HOME: not in
//! packs, not in the SQLite file or its WAL, not in any other file.

mod support;
use sovseal::engine::XattrFlags;
use sovseal::seal::tree::ROOT_INO;
use support::home::{Env, files_under};

fn markers() -> Vec<Vec<u8>> {
    let tag = std::process::id();
    [
        "NAMEMARK",
        "BODYMARK",
        "XATTRMARK",
        "LINKMARK",
        "DIRMARK",
        "XNAMEMARK",
    ]
    .iter()
    .map(|m| format!("{m}{tag}zq").into_bytes())
    .collect()
}

fn assert_blind(env: &Env, markers: &[Vec<u8>]) {
    let files = files_under(env.home.root());
    assert!(files.iter().any(|f| f.ends_with("index.db")));
    for f in &files {
        let raw = std::fs::read(f).unwrap();
        for m in markers {
            assert!(
                !raw.windows(m.len()).any(|w| w == m.as_slice()),
                "{} contains {}",
                f.display(),
                String::from_utf8_lossy(m)
            );
        }
    }
}

#[test]
fn no_plaintext_under_the_home() {
    let env = Env::new();
    let m = markers();
    let mut e = env.open();
    e.set_dirty_budget(1 << 20);
    let d = e.mkdir(ROOT_INO, &m[4], 0o755, 0, 0).unwrap();
    for i in 0..3 {
        let name = [m[0].clone(), format!("-{i}").into_bytes()].concat();
        let f = e.create(d.ino, &name, 0o644, 0, 0).unwrap();
        let body: Vec<u8> = m[1].iter().cycle().take(3 << 20).copied().collect();
        e.write(f.ino, 0, &body).unwrap();
        e.write(f.ino, 5 << 20, &m[1]).unwrap();
        e.setxattr(
            f.ino,
            &[b"user.".to_vec(), m[5].clone()].concat(),
            &m[2],
            XattrFlags::default(),
        )
        .unwrap();
        e.commit().unwrap();
    }
    e.symlink(ROOT_INO, b"l", &m[3], 0, 0).unwrap();
    e.commit().unwrap();
    // Uncommitted data sealed early because of the small dirty budget
    // (written in pieces smaller than a chunk: held as dirty data first),
    // and in whole chunks as written.
    let f = e.create(ROOT_INO, b"pending", 0o644, 0, 0).unwrap();
    let body: Vec<u8> = m[1].iter().cycle().take(4 << 20).copied().collect();
    for (i, p) in body.chunks(32 << 10).enumerate() {
        e.write(f.ino, (i << 15) as u64, p).unwrap();
        assert!(e.dirty_bytes() <= (1 << 20) + (32 << 10));
    }
    e.write(f.ino, 8 << 20, &body).unwrap();
    // While open: the WAL holds the latest transactions.
    assert!(env.data_dir().join("index.db-wal").exists());
    assert_blind(&env, &m);
    drop(e);
    assert_blind(&env, &m);
    // The markers really were stored: they read back through the engine.
    let e = env.open();
    let f = e
        .resolve(&[m[4].clone(), b"/".to_vec(), m[0].clone(), b"-0".to_vec()].concat())
        .unwrap();
    assert_eq!(e.read(f, 0, m[1].len()).unwrap(), m[1]);
}
