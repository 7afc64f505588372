//! `crdgen` and `install-gateway`: the two commands that only move bytes around.

use std::path::Path;

use kube::ResourceExt;

use crate::api;

/// Why a file command failed.
#[derive(Debug, thiserror::Error)]
pub enum FileCommandError {
    #[error("cannot serialise CRD {name}: {message}")]
    Serialize { name: String, message: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot find this program's own file to copy: {0}")]
    CurrentExe(#[source] std::io::Error),
}

/// The YAML of every CRD: `(file name, content)`, in the order of [`api::crds`].
pub fn crd_files() -> Result<Vec<(String, String)>, FileCommandError> {
    api::crds()
        .into_iter()
        .map(|crd| {
            let name = crd.name_any();
            serde_saphyr::to_string(&crd)
                .map(|yaml| (format!("{name}.yaml"), yaml))
                .map_err(|e| FileCommandError::Serialize {
                    name,
                    message: e.to_string(),
                })
        })
        .collect()
}

/// Print the CRDs as one YAML stream, or write one file each into `out_dir`.
pub fn run(out_dir: Option<&Path>) -> Result<Option<String>, FileCommandError> {
    let files = crd_files()?;
    let Some(dir) = out_dir else {
        return Ok(Some(
            files
                .iter()
                .map(|(_, yaml)| format!("---\n{yaml}"))
                .collect(),
        ));
    };
    for (name, yaml) in files {
        let path = dir.join(name);
        std::fs::write(&path, yaml).map_err(|source| FileCommandError::Write {
            path: path.display().to_string(),
            source,
        })?;
    }
    Ok(None)
}

/// Copy the running binary to `dir/mcp-operator`, executable, for stdio servers' wrapper.
pub fn install_binary(dir: &Path) -> Result<Option<String>, FileCommandError> {
    let source = std::env::current_exe().map_err(FileCommandError::CurrentExe)?;
    let target = dir.join(crate::builders::pod::BINARY_NAME);
    let write_error = |source| FileCommandError::Write {
        path: target.display().to_string(),
        source,
    };
    std::fs::copy(&source, &target).map_err(write_error)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755))
            .map_err(write_error)?;
    }
    Ok(None)
}
