//! Routing loops: routes whose targets feed, through other routes, back into their own
//! source. Each cycle is reported once, at its first route.

use std::collections::BTreeSet;

use super::{Compiler, RouteError};
use crate::routes::fanout::{self, Reach};

impl Compiler<'_> {
    /// Finds cycles among routes whose targets can feed other routes' sources.
    pub(super) fn find_loops(&mut self) {
        let n = self.routes.len();
        let mut edges: Vec<Vec<usize>> = vec![Vec::new(); n];
        let sources = fanout::source_patterns(&self.routes);
        for (i, r) in self.routes.iter().enumerate() {
            for t in &r.targets {
                // A name taken from a header could be anything; such loops are caught at
                // run time by the depth limit instead of flagging every such route here.
                if let Reach::Routes(js) = fanout::reach(r, t, &sources) {
                    edges[i].extend(js);
                }
            }
        }
        // Depth-first search with colours; report each cycle once, at its first route.
        let mut color = vec![0u8; n];
        let mut stack = Vec::new();
        let mut reported = BTreeSet::new();
        for start in 0..n {
            if color[start] == 0 {
                self.dfs(start, &edges, &mut color, &mut stack, &mut reported);
            }
        }
    }

    fn dfs(
        &mut self,
        v: usize,
        edges: &[Vec<usize>],
        color: &mut [u8],
        stack: &mut Vec<usize>,
        reported: &mut BTreeSet<Vec<usize>>,
    ) {
        color[v] = 1;
        stack.push(v);
        for &w in &edges[v] {
            if color[w] == 1 {
                let pos = stack.iter().position(|&x| x == w).unwrap_or(0);
                let mut cycle: Vec<usize> = stack[pos..].to_vec();
                let mut key = cycle.clone();
                key.sort();
                if reported.insert(key) {
                    cycle.push(w);
                    let names: Vec<&str> = cycle
                        .iter()
                        .map(|&i| self.routes[i].name.as_str())
                        .collect();
                    let r = &self.routes[w];
                    self.errors.push(RouteError {
                        file: r.file.clone(),
                        line: r.line,
                        column: r.column,
                        route: Some(r.name.clone()),
                        message: format!("routing loop: {}", names.join(" → ")),
                    });
                }
            } else if color[w] == 0 {
                self.dfs(w, edges, color, stack, reported);
            }
        }
        stack.pop();
        color[v] = 2;
    }
}
