//! Executors of the `starling` binary: a [`SkillRouter`] that hands each part to the
//! handler configured for its skill — a [`CommandHandler`] (a program per part) or
//! the [`ApiExecutor`] (a program completes the part through the control API).

mod api;
mod command;

use std::{collections::BTreeMap, sync::Arc};

pub use api::{ApiExecutor, AssignmentError, PendingAssignment};
pub use command::CommandHandler;
use starling_protocol::Assignment;

use crate::{PartFuture, PartOutcome, ProgressSink, TaskHandler, app::settings::HandlerPlan};

/// Routes each assignment to its skill's handler.
pub struct SkillRouter {
    handlers: BTreeMap<String, Arc<dyn TaskHandler>>,
}

impl SkillRouter {
    /// Builds a handler for every planned skill; api-mode skills share `api`.
    pub fn new(plans: &BTreeMap<String, HandlerPlan>, api: &ApiExecutor) -> SkillRouter {
        let handlers = plans
            .iter()
            .map(|(skill, plan)| {
                let handler: Arc<dyn TaskHandler> = match plan {
                    HandlerPlan::Command { argv, timeout } => {
                        Arc::new(CommandHandler::new(argv.clone(), *timeout))
                    }
                    HandlerPlan::Api { timeout } => Arc::new(api.with_timeout(*timeout)),
                };
                (skill.clone(), handler)
            })
            .collect();
        SkillRouter { handlers }
    }
}

impl TaskHandler for SkillRouter {
    fn run(&self, assignment: Assignment, progress: ProgressSink) -> PartFuture {
        match self.handlers.get(&assignment.skill) {
            Some(handler) => handler.run(assignment, progress),
            None => {
                let output = format!("no handler for skill {:?}", assignment.skill).into_bytes();
                Box::pin(async move {
                    PartOutcome {
                        success: false,
                        output,
                    }
                })
            }
        }
    }
}
