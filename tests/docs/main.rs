//! Broker-free checks of the documentation: every relative link in the
//! README and `docs/` leads somewhere (the file, and the heading its anchor
//! names), and the configuration reference lists exactly the keys
//! `eddy.toml` accepts.
//!
//! Both read the repository as text, with the standard library only: the
//! Markdown by lines, the config structs by a small Rust tokenizer.
//!
//! - `links`: the links and the anchors GitHub gives headings;
//! - `config_keys`: the reference table against the strict config structs;
//! - `tokens`: the tokenizer those structs are read with.

mod config_keys;
mod links;
mod tokens;

use std::fs;
use std::path::{Path, PathBuf};

/// The repository: this crate lives in `tests/`.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate has a parent folder")
        .to_path_buf()
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The lines of a Markdown text outside fenced code blocks, numbered from 1.
fn prose(text: &str) -> Vec<(usize, &str)> {
    let mut lines = Vec::new();
    let mut fence: Option<(char, usize)> = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let marker = trimmed.chars().next().filter(|c| *c == '`' || *c == '~');
        let run = marker.map_or(0, |c| trimmed.chars().take_while(|x| *x == c).count());
        match (fence, marker) {
            (None, Some(c)) if run >= 3 => fence = Some((c, run)),
            (Some((c, n)), Some(m)) if m == c && run >= n && trimmed.trim_end().len() == run => {
                fence = None
            }
            (None, _) => lines.push((i + 1, line)),
            (Some(_), _) => {}
        }
    }
    lines
}
