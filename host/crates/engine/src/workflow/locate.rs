//! Finds where a key path sits in a block-style YAML text, so that errors found after
//! parsing (an unknown block, a missing stage) can still point at a line and column.

/// One step of a path: a mapping key, or an item of a sequence.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Step<'a> {
    Key(&'a str),
    Item(usize),
}

/// 1-based line and column of the last step of `path`, or of the deepest step found.
/// `value`, when given, refines the position to that word inside the node found.
pub fn locate(text: &str, path: &[Step<'_>], value: Option<&str>) -> Option<(usize, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    // The region (range of lines) the current node spans and its indentation floor.
    let mut end = lines.len();
    let mut found: Option<(usize, usize)> = None;
    for step in path {
        let hit = match (*step, found) {
            (Step::Key(key), _) => find_key(&lines, found, end, key),
            (Step::Item(index), Some((line, column))) => find_item(&lines, line, end, column, index),
            (Step::Item(_), None) => None,
        };
        let Some((line, column)) = hit else { break };
        found = Some((line, column));
        // Children are the following lines indented deeper than this one, plus the rest
        // of this line (flow style).
        let indent = indentation(lines[line]);
        let mut last = line + 1;
        while last < end && (is_blank(lines[last]) || indentation(lines[last]) > indent) {
            last += 1;
        }
        end = last;
    }
    let (line, column) = found?;
    if let Some(word) = value {
        for (offset, text) in lines[line..end].iter().enumerate() {
            let from = if offset == 0 { column } else { 0 };
            if let Some(i) = find_word(&text[from.min(text.len())..], word) {
                return Some((line + offset + 1, from + i + 1));
            }
        }
    }
    Some((line + 1, column + 1))
}

fn is_blank(line: &str) -> bool {
    let t = line.trim_start();
    t.is_empty() || t.starts_with('#')
}

fn indentation(line: &str) -> usize {
    line.len() - line.trim_start_matches([' ', '-']).len()
}

/// `key:` among the children of `parent` (the document root when `None`): on the lines
/// of the region at the first child's indentation, or later on the parent's own line.
fn find_key(lines: &[&str], parent: Option<(usize, usize)>, end: usize, key: &str) -> Option<(usize, usize)> {
    let (first, child_indent) = match parent {
        None => (0, Some(0)),
        Some((line, _)) => (line, lines[line + 1..end].iter().find(|l| !is_blank(l)).map(|l| indentation(l))),
    };
    for (i, line) in lines.iter().enumerate().take(end).skip(first) {
        let own_line = parent.is_some_and(|(l, _)| l == i);
        if is_blank(line) || (!own_line && Some(indentation(line)) != child_indent) {
            continue;
        }
        let mut from = if own_line { parent.map_or(0, |(_, c)| c + 1) } else { 0 };
        while let Some(pos) = find_word(&line[from..], key) {
            let at = from + pos;
            if line[at + key.len()..].trim_start_matches(['"', '\'']).starts_with(':') {
                return Some((i, at));
            }
            from = at + key.len();
        }
    }
    None
}

/// The `index`-th `- ` item of the first sequence in the region, or of a flow list.
fn find_item(lines: &[&str], start: usize, end: usize, min_indent: usize, index: usize) -> Option<(usize, usize)> {
    // Flow style on the node's own line: `key: [a, b, c]`.
    let line = lines.get(start)?;
    if let Some(open) = line[min_indent.min(line.len())..].find('[') {
        let open = min_indent + open + 1;
        let mut column = open;
        for (i, item) in line[open..].split(',').enumerate() {
            let lead = item.len() - item.trim_start().len();
            if i == index {
                return Some((start, column + lead));
            }
            column += item.len() + 1;
        }
        return None;
    }
    let mut seen = 0;
    let mut item_indent = None;
    for (i, line) in lines.iter().enumerate().take(end).skip(start + 1) {
        let trimmed = line.trim_start();
        if !trimmed.starts_with("- ") && trimmed != "-" {
            continue;
        }
        let indent = line.len() - trimmed.len();
        if *item_indent.get_or_insert(indent) != indent {
            continue;
        }
        if seen == index {
            return Some((i, indent + 2));
        }
        seen += 1;
    }
    None
}

/// Byte offset of `word` in `text` where it is not part of a longer identifier.
fn find_word(text: &str, word: &str) -> Option<usize> {
    let is_ident = |c: char| c.is_alphanumeric() || c == '_' || c == '-';
    let mut from = 0;
    while let Some(pos) = text[from..].find(word) {
        let at = from + pos;
        let before = text[..at].chars().next_back();
        let after = text[at + word.len()..].chars().next();
        if !before.is_some_and(is_ident) && !after.is_some_and(is_ident) {
            return Some(at);
        }
        from = at + word.len();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "name: x\nspace:\n  blocks: [conv, dens]\nstages:\n  search:\n    kind: search\n  export:\n    kind: export\n    needs:\n      - serch\n";

    #[test]
    fn keys_items_and_values() {
        assert_eq!(locate(TEXT, &[Step::Key("space"), Step::Key("blocks")], None), Some((3, 3)));
        assert_eq!(locate(TEXT, &[Step::Key("space"), Step::Key("blocks"), Step::Item(1)], None), Some((3, 18)));
        assert_eq!(
            locate(TEXT, &[Step::Key("stages"), Step::Key("export"), Step::Key("needs"), Step::Item(0)], None),
            Some((10, 9))
        );
        assert_eq!(locate(TEXT, &[Step::Key("stages"), Step::Key("export"), Step::Key("kind")], None), Some((8, 5)));
        assert_eq!(locate(TEXT, &[Step::Key("stages"), Step::Key("export")], Some("serch")), Some((10, 9)));
    }

    #[test]
    fn missing_steps_fall_back_to_the_deepest_found() {
        assert_eq!(locate(TEXT, &[Step::Key("stages"), Step::Key("nope")], None), Some((4, 1)));
        assert_eq!(locate(TEXT, &[Step::Key("absent")], None), None);
    }
}
