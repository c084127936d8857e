//! Where a spec may put files.
//!
//! A spec file that an operator runs (`sluice run`, `validate`, `dev`) is
//! trusted with paths: they are taken as written, relative ones joined to
//! the spec file's directory. A spec sent to `sluice serve` is not: with a
//! [`Confinement`], every path it names must resolve inside the pipeline's
//! own directory (`<data>/pipelines/<name>/`) or inside a directory the
//! operator allowed (`sluice serve --allow-dir`).
//!
//! Rules, for `checkpoint.dir`, each `outputs.*.parquet.path` and each `outputs.*.delta.path`:
//! - a relative path is joined to the pipeline's directory and resolved
//!   lexically (`a/../b` is `b`); the result must lie strictly below that
//!   directory, and its first component must not start with `.` (names
//!   like `.modules` are the server's own);
//! - an absolute path must lie inside (or be) an allowed directory, or obey
//!   the rule above;
//! - the deepest part of the result that exists must canonicalize to a
//!   place inside the same root (no symbolic link leads out).
//!
//! A transform's `module` is a file the server put below the pipeline's
//! directory (a link to a blob of the module store); it is checked
//! lexically and never looked at on disk here.
//!
//! An error names the field and says the same whatever exists on the
//! server: the lexical rules come first, and the file system is consulted
//! only for a path already known to lie inside a root.

use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

use super::SpecError;

/// The places a spec sent to the server may put files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confinement {
    /// The pipeline's own directory, absolute: the base of relative paths.
    pub base: PathBuf,
    /// Directories the operator allows besides (absolute).
    pub allowed: Vec<PathBuf>,
}

/// The message of every refused path.
const OUTSIDE: &str = "must be inside the pipeline's directory (a relative path without `..` \
                       that does not start with `.`) or inside a directory the server allows \
                       (sluice serve --allow-dir)";

/// The message of every refused S3 directory.
const OUTSIDE_S3: &str = "an s3:// directory must be inside an S3 prefix the server allows \
                          (sluice serve --allow-dir s3://bucket/prefix), without `.`, `..` or \
                          empty segments";

/// The message of a refused module: only store references reach here
/// resolved, so anything else was not one.
const NOT_A_STORE_MODULE: &str = "must be `name` or `name@version` of a module pushed to this \
                                  server (sluice module push)";

impl Confinement {
    pub fn new(base: impl Into<PathBuf>, allowed: Vec<PathBuf>) -> Self {
        Self {
            base: base.into(),
            allowed,
        }
    }

    /// Checks an `s3://bucket/prefix` directory (checkpoints, a Delta table): the server's
    /// credentials reach it, so it must lie inside (or be) a prefix the
    /// operator allowed (`--allow-dir s3://bucket/prefix`), without `.`,
    /// `..` or empty segments.
    pub(super) fn place_url(&self, field: &str, url: &str) -> Result<String, SpecError> {
        let url = url.trim_end_matches('/');
        let clean = url.strip_prefix(super::S3_SCHEME).is_some_and(|rest| {
            rest.split('/')
                .all(|s| !s.is_empty() && s != "." && s != "..")
        });
        let inside = self
            .allowed
            .iter()
            .filter_map(|a| a.to_str()?.strip_prefix(super::S3_SCHEME))
            .map(|a| format!("{}{}", super::S3_SCHEME, a.trim_end_matches('/')))
            .any(|a| url == a || url.strip_prefix(&a).is_some_and(|r| r.starts_with('/')));
        if clean && inside {
            Ok(url.to_owned())
        } else {
            Err(SpecError::new(field, OUTSIDE_S3))
        }
    }

    /// Resolves a path where the spec may write (`checkpoint.dir`, a
    /// Parquet `path`).
    pub(super) fn place(&self, field: &str, path: &Path) -> Result<PathBuf, SpecError> {
        let refuse = || SpecError::new(field, OUTSIDE);
        let base = normalize(&self.base).ok_or_else(refuse)?;
        let resolved = normalize(&self.base.join(path)).ok_or_else(refuse)?;
        let root = if below_own(&base, &resolved) {
            base
        } else if path.is_absolute() {
            self.allowed
                .iter()
                .filter_map(|a| normalize(a))
                .find(|a| resolved.starts_with(a))
                .ok_or_else(refuse)?
        } else {
            return Err(refuse());
        };
        // Inside lexically: now no link may lead out.
        match (real(&root), real(&resolved)) {
            (Some(root), Some(real)) if real.starts_with(&root) => Ok(resolved),
            _ => Err(refuse()),
        }
    }

    /// Checks a transform's module file, lexically only.
    pub(super) fn module(&self, field: &str, path: &Path) -> Result<PathBuf, SpecError> {
        let refuse = || SpecError::new(field, NOT_A_STORE_MODULE);
        let base = normalize(&self.base).ok_or_else(refuse)?;
        let resolved = normalize(&self.base.join(path)).ok_or_else(refuse)?;
        if resolved.starts_with(&base) && resolved != base {
            Ok(resolved)
        } else {
            Err(refuse())
        }
    }
}

/// `path` strictly below `base`, its first component not hidden.
fn below_own(base: &Path, path: &Path) -> bool {
    match path
        .strip_prefix(base)
        .ok()
        .and_then(|r| r.components().next())
    {
        Some(Component::Normal(first)) => !first.to_string_lossy().starts_with('.'),
        _ => false,
    }
}

/// `path` with `.` and `..` resolved without the file system; `None` when
/// a relative path climbs above its start. Absolute: `..` at the root stays
/// there, as the kernel does.
fn normalize(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    let mut depth = 0usize;
    for component in path.components() {
        match component {
            Component::Prefix(_) | Component::RootDir => out.push(component),
            Component::CurDir => {}
            Component::ParentDir => {
                if depth > 0 {
                    out.pop();
                    depth -= 1;
                } else if !path.is_absolute() {
                    return None;
                }
            }
            Component::Normal(name) => {
                out.push(name);
                depth += 1;
            }
        }
    }
    Some(out)
}

/// The canonical form of `path`'s deepest existing ancestor, with the
/// components that do not exist yet appended; `None` when it cannot be
/// known (a dangling link, no permission).
fn real(path: &Path) -> Option<PathBuf> {
    let mut missing: Vec<OsString> = Vec::new();
    let mut existing = path;
    loop {
        match std::fs::canonicalize(existing) {
            Ok(mut real) => {
                real.extend(missing.iter().rev());
                return Some(real);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if std::fs::symlink_metadata(existing).is_ok() {
                    return None; // a link to nowhere
                }
                missing.push(existing.file_name()?.to_owned());
                existing = existing.parent()?;
            }
            Err(_) => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn confinement(data: &Path, allowed: Vec<PathBuf>) -> Confinement {
        Confinement::new(data.join("pipelines/p"), allowed)
    }

    fn refused(field: &str) -> String {
        format!("{field}: {OUTSIDE}")
    }

    #[test]
    fn relative_paths_stay_below_the_pipeline_directory() {
        let data = tempfile::tempdir().unwrap();
        let c = confinement(data.path(), vec![]);
        let place = |p: &str| c.place("checkpoint.dir", Path::new(p));
        assert_eq!(place("ckpt").unwrap(), c.base.join("ckpt"));
        assert_eq!(place("./a/../b/c").unwrap(), c.base.join("b/c"));
        for bad in [
            "..",
            "../q/ckpt",
            "../../x",
            "a/../../x",
            ".",
            "",
            ".modules/1",
            "./.x",
        ] {
            assert_eq!(
                place(bad).unwrap_err().to_string(),
                refused("checkpoint.dir"),
                "{bad}"
            );
        }
    }

    #[test]
    fn s3_directories_only_inside_an_allowed_prefix() {
        let data = tempfile::tempdir().unwrap();
        let c = confinement(data.path(), vec![PathBuf::from("s3://ok/pipelines/")]);
        let place = |u: &str| c.place_url("checkpoint.dir", u);
        assert_eq!(
            place("s3://ok/pipelines/p1").unwrap(),
            "s3://ok/pipelines/p1"
        );
        assert_eq!(place("s3://ok/pipelines/").unwrap(), "s3://ok/pipelines");
        for bad in [
            "s3://ok/pipelines-other/p",
            "s3://ok/pipelines/../secrets",
            "s3://ok/pipelines/./p",
            "s3://ok/pipelines//p",
            "s3://other/pipelines/p",
            "s3://ok",
        ] {
            assert_eq!(
                place(bad).unwrap_err().to_string(),
                format!("checkpoint.dir: {OUTSIDE_S3}"),
                "{bad}"
            );
        }
        // No prefix allowed: none at all.
        let c = confinement(data.path(), vec![]);
        assert!(
            c.place_url("checkpoint.dir", "s3://ok/pipelines/p1")
                .is_err()
        );
    }

    #[test]
    fn absolute_paths_only_inside_an_allowed_directory_or_the_own_one() {
        let data = tempfile::tempdir().unwrap();
        let allowed = tempfile::tempdir().unwrap();
        let allowed = std::fs::canonicalize(allowed.path()).unwrap();
        let c = confinement(data.path(), vec![allowed.clone()]);
        let place = |p: &Path| c.place("outputs.default.parquet.path", p);
        assert_eq!(place(&allowed.join("pq")).unwrap(), allowed.join("pq"));
        assert_eq!(place(&allowed).unwrap(), allowed);
        assert_eq!(place(&c.base.join("pq")).unwrap(), c.base.join("pq"));
        for bad in [
            PathBuf::from("/tmp/x"),
            PathBuf::from("/etc"),
            allowed.join("../elsewhere"),
            allowed.join("a/../../elsewhere"),
            data.path().join("pipelines/q/pq"),
            data.path().join("modules"),
            c.base.join(".modules"),
        ] {
            assert_eq!(
                place(&bad).unwrap_err().to_string(),
                refused("outputs.default.parquet.path"),
                "{}",
                bad.display()
            );
        }
    }

    #[test]
    fn a_link_leading_out_is_refused() {
        let data = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let c = confinement(data.path(), vec![]);
        std::fs::create_dir_all(&c.base).unwrap();
        std::os::unix::fs::symlink(outside.path(), c.base.join("out")).unwrap();
        std::os::unix::fs::symlink("/nonexistent", c.base.join("dangling")).unwrap();
        for bad in ["out", "out/ckpt", "dangling/ckpt"] {
            assert_eq!(
                c.place("checkpoint.dir", Path::new(bad))
                    .unwrap_err()
                    .to_string(),
                refused("checkpoint.dir"),
                "{bad}"
            );
        }
        std::fs::create_dir(c.base.join("real")).unwrap();
        assert_eq!(
            c.place("checkpoint.dir", Path::new("real/ckpt")).unwrap(),
            c.base.join("real/ckpt")
        );
    }

    #[test]
    fn modules_are_checked_lexically_with_one_answer() {
        let data = tempfile::tempdir().unwrap();
        let c = confinement(data.path(), vec![]);
        let m = |p: &str| c.module("transforms[0].module", Path::new(p));
        let file = c.base.join(".modules/1/f.wasm");
        assert_eq!(m(file.to_str().unwrap()).unwrap(), file);
        let expected = format!("transforms[0].module: {NOT_A_STORE_MODULE}");
        for bad in ["/nonexistent", "/etc/passwd", "../../modules/blobs/x.wasm"] {
            assert_eq!(m(bad).unwrap_err().to_string(), expected, "{bad}");
        }
    }
}
