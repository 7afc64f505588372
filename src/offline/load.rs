//! Reading manifest files: paths and directories to YAML documents, each remembered with its
//! file, its position in the file and its first line, so every error can point at it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use regex::Regex;
use serde_json::Value;

/// The path that means standard input, as with kubectl.
const STDIN_PATH: &str = "-";
/// How standard input is named in messages.
const STDIN_NAME: &str = "<stdin>";
/// File endings read from directories (a file named explicitly is read whatever its ending).
const MANIFEST_EXTENSIONS: [&str; 3] = ["yaml", "yml", "json"];

/// One YAML document of one file.
#[derive(Clone, Debug, PartialEq)]
pub struct Document {
    /// The file, as given or found.
    pub file: String,
    /// Position among the file's non-empty documents, from 1.
    pub index: usize,
    /// Line the document starts on, from 1.
    pub line: usize,
    /// The parsed content.
    pub value: Value,
}

/// Where a problem is: a file, and within it a document.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Origin {
    pub file: String,
    /// Document number and first line, when the problem is inside one document.
    pub document: Option<(usize, usize)>,
}

impl Origin {
    pub fn file(file: &str) -> Self {
        Origin {
            file: file.into(),
            document: None,
        }
    }

    pub fn document(doc: &Document) -> Self {
        Origin {
            file: doc.file.clone(),
            document: Some((doc.index, doc.line)),
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.document {
            Some((index, line)) => write!(f, "{}: document {index} (line {line})", self.file),
            None => write!(f, "{}", self.file),
        }
    }
}

/// One problem with the input.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct InputProblem {
    pub origin: Origin,
    /// `Kind namespace/name` when known.
    pub object: Option<String>,
    /// Field path; empty when the problem is not about one field.
    pub path: String,
    /// What is wrong and what is expected.
    pub message: String,
}

impl fmt::Display for InputProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.origin)?;
        if let Some(object) = &self.object {
            write!(f, ", {object}")?;
        }
        if self.path.is_empty() {
            write!(f, ": {}", self.message)
        } else {
            write!(f, ": {}: {}", self.path, self.message)
        }
    }
}

/// Read every document under `paths`. Problems are collected across all files.
pub fn read_documents(paths: &[PathBuf]) -> Result<Vec<Document>, Vec<InputProblem>> {
    let mut documents = Vec::new();
    let mut problems = Vec::new();
    if paths.is_empty() {
        problems.push(InputProblem {
            origin: Origin::file("-f"),
            object: None,
            path: String::new(),
            message: "no input: give at least one file or directory with -f".into(),
        });
    }
    for path in paths {
        if path.as_os_str() == STDIN_PATH {
            let mut text = String::new();
            match std::io::Read::read_to_string(&mut std::io::stdin(), &mut text) {
                Ok(_) => match parse_documents(STDIN_NAME, &text) {
                    Ok(docs) if docs.is_empty() => problems.push(file_problem(
                        STDIN_NAME,
                        "holds no manifest: standard input was empty",
                    )),
                    Ok(docs) => documents.extend(docs),
                    Err(mut e) => problems.append(&mut e),
                },
                Err(e) => problems.push(file_problem(
                    STDIN_NAME,
                    &format!("cannot be read as UTF-8 text: {e}"),
                )),
            }
            continue;
        }
        let files = match manifest_files(path) {
            Ok(files) => files,
            Err(problem) => {
                problems.push(problem);
                continue;
            }
        };
        for file in files {
            let name = file.display().to_string();
            let text = match std::fs::read(&file) {
                Ok(bytes) => match String::from_utf8(bytes) {
                    Ok(text) => text,
                    Err(_) => {
                        problems.push(file_problem(
                            &name,
                            "is not UTF-8 text: manifests are YAML or JSON",
                        ));
                        continue;
                    }
                },
                Err(e) => {
                    problems.push(file_problem(&name, &format!("cannot be read: {e}")));
                    continue;
                }
            };
            match parse_documents(&name, &text) {
                Ok(docs) if docs.is_empty() => {
                    problems.push(file_problem(
                        &name,
                        "holds no manifest: the file is empty or only comments",
                    ));
                }
                Ok(docs) => documents.extend(docs),
                Err(mut e) => problems.append(&mut e),
            }
        }
    }
    if problems.is_empty() {
        Ok(documents)
    } else {
        Err(problems)
    }
}

fn file_problem(file: &str, message: &str) -> InputProblem {
    InputProblem {
        origin: Origin::file(file),
        object: None,
        path: String::new(),
        message: message.into(),
    }
}

/// The manifest files a path names: itself, or the YAML/JSON files below a directory (sorted,
/// hidden entries skipped).
fn manifest_files(path: &Path) -> Result<Vec<PathBuf>, InputProblem> {
    let name = path.display().to_string();
    let metadata = std::fs::metadata(path)
        .map_err(|e| file_problem(&name, &format!("cannot be read: {e}")))?;
    if !metadata.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut found = Vec::new();
    let mut pending = vec![path.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|e| {
            file_problem(
                &dir.display().to_string(),
                &format!("cannot be listed: {e}"),
            )
        })?;
        for entry in entries {
            let entry = entry.map_err(|e| {
                file_problem(
                    &dir.display().to_string(),
                    &format!("cannot be listed: {e}"),
                )
            })?;
            let entry_path = entry.path();
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            if entry_path.is_dir() {
                pending.push(entry_path);
            } else if entry_path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| MANIFEST_EXTENSIONS.contains(&e))
            {
                found.push(entry_path);
            }
        }
    }
    found.sort();
    if found.is_empty() {
        return Err(file_problem(
            &name,
            "is a directory with no manifests: expected .yaml, .yml or .json files in it",
        ));
    }
    Ok(found)
}

static SYNTAX_PREFIX: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"^(error: )?line \d+ column \d+: ").ok());

/// Split `text` at `---` lines and parse each document on its own, so a syntax error in one
/// does not hide the others and every line number is the file's.
pub fn parse_documents(file: &str, text: &str) -> Result<Vec<Document>, Vec<InputProblem>> {
    let mut chunks: Vec<(usize, String)> = vec![(1, String::new())];
    for (number, line) in text.lines().enumerate() {
        let is_separator =
            line.starts_with("---") && line[3..].chars().next().is_none_or(char::is_whitespace);
        if is_separator {
            // Keep anything after the marker on the new document's first line, at its column.
            chunks.push((number + 1, format!("   {}\n", &line[3..])));
        } else if line.trim_end() == "..." {
            chunks.push((number + 2, String::new()));
        } else if let Some((_, chunk)) = chunks.last_mut() {
            chunk.push_str(line);
            chunk.push('\n');
        }
    }
    let mut documents = Vec::new();
    let mut problems = Vec::new();
    for (start, chunk) in chunks {
        let content_line = chunk
            .lines()
            .position(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
        let Some(offset) = content_line else { continue };
        let index = documents.len() + problems.len() + 1;
        let line = start + offset;
        match serde_saphyr::from_str::<Value>(&chunk) {
            Ok(Value::Null) => {}
            Ok(value) => documents.push(Document {
                file: file.into(),
                index,
                line,
                value,
            }),
            Err(e) => {
                let location = e
                    .location()
                    .map(|l| {
                        format!(
                            " at line {}, column {}",
                            l.line() as usize + start - 1,
                            l.column()
                        )
                    })
                    .unwrap_or_default();
                let raw = e.without_snippet().to_string();
                let first_line = raw.lines().next().unwrap_or_default();
                let reason = SYNTAX_PREFIX
                    .as_ref()
                    .map(|re| re.replace(first_line, "").into_owned())
                    .unwrap_or_else(|| first_line.to_string());
                problems.push(InputProblem {
                    origin: Origin {
                        file: file.into(),
                        document: Some((index, line)),
                    },
                    object: None,
                    path: String::new(),
                    message: format!("YAML syntax error{location}: {reason}"),
                });
            }
        }
    }
    if problems.is_empty() {
        Ok(documents)
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_keep_their_file_lines() {
        let docs =
            parse_documents("f.yaml", "# head\na: 1\n---\n\nb: 2\n--- # c\n---\nc: 3\n").unwrap();
        let summary: Vec<_> = docs.iter().map(|d| (d.index, d.line)).collect();
        assert_eq!(summary, vec![(1, 2), (2, 5), (3, 8)]);
    }

    #[test]
    fn syntax_errors_point_at_the_file_line() {
        let problems = parse_documents("f.yaml", "a: 1\n---\nb: [\n").unwrap_err();
        assert_eq!(problems.len(), 1);
        let text = problems[0].to_string();
        assert!(
            text.starts_with("f.yaml: document 2 (line 3): YAML syntax error at line 3"),
            "{text}"
        );
    }
}
