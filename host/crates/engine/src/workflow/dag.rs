//! The stages' `needs:` as a DAG: a dependency order, or the missing stage or cycle
//! that prevents one.

use std::collections::BTreeMap;

use super::Stage;

#[derive(Debug, Clone, PartialEq)]
pub enum DagError {
    /// `stage` needs `need` (its `index`-th entry), which no stage is called.
    Missing { stage: String, index: usize, need: String },
    /// Stages that need each other, first and last the same.
    Cycle(Vec<String>),
}

/// Stage names such that each comes after everything it needs (ties by name).
pub fn topological_order(stages: &BTreeMap<String, Stage>) -> Result<Vec<String>, DagError> {
    for (name, stage) in stages {
        if let Some((index, need)) = stage.needs.iter().enumerate().find(|(_, n)| !stages.contains_key(*n)) {
            return Err(DagError::Missing { stage: name.clone(), index, need: need.clone() });
        }
    }
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Unseen,
        Open,
        Done,
    }
    let mut marks: BTreeMap<&str, Mark> = stages.keys().map(|k| (k.as_str(), Mark::Unseen)).collect();
    let mut order = Vec::with_capacity(stages.len());
    // Depth-first with an explicit path, so that a cycle can be reported as one.
    fn visit<'a>(
        name: &'a str,
        stages: &'a BTreeMap<String, Stage>,
        marks: &mut BTreeMap<&'a str, Mark>,
        path: &mut Vec<&'a str>,
        order: &mut Vec<String>,
    ) -> Result<(), DagError> {
        match marks[name] {
            Mark::Done => return Ok(()),
            Mark::Open => {
                let start = path.iter().position(|n| *n == name).unwrap_or(0);
                let mut cycle: Vec<String> = path[start..].iter().map(|s| s.to_string()).collect();
                cycle.push(name.to_string());
                return Err(DagError::Cycle(cycle));
            }
            Mark::Unseen => {}
        }
        marks.insert(name, Mark::Open);
        path.push(name);
        for need in &stages[name].needs {
            visit(need, stages, marks, path, order)?;
        }
        path.pop();
        marks.insert(name, Mark::Done);
        order.push(name.to_string());
        Ok(())
    }
    for name in stages.keys() {
        visit(name, stages, &mut marks, &mut Vec::new(), &mut order)?;
    }
    Ok(order)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workflow::{ExportStage, StageWork};

    fn stage(needs: &[&str]) -> Stage {
        Stage { needs: needs.iter().map(|s| s.to_string()).collect(), work: StageWork::Export(ExportStage::default()) }
    }

    #[test]
    fn orders_and_finds_cycles() {
        let mut stages = BTreeMap::from([("b".to_string(), stage(&["a"])), ("a".to_string(), stage(&[]))]);
        assert_eq!(topological_order(&stages).unwrap(), ["a", "b"]);
        stages.insert("a".into(), stage(&["b"]));
        assert_eq!(topological_order(&stages).unwrap_err(), DagError::Cycle(vec!["a".into(), "b".into(), "a".into()]));
        stages.insert("a".into(), stage(&["c"]));
        assert!(matches!(topological_order(&stages).unwrap_err(), DagError::Missing { need, .. } if need == "c"));
    }
}
