//! Adam, AdamW and SGD with momentum over a [`tch::nn::VarStore`], with parameter groups and
//! state that can be checkpointed.
//!
//! tch's own `nn::Optimizer` keeps its moments inside LibTorch where tch 0.26 cannot read or write
//! them, so a run resumed from a checkpoint would restart Adam from zero moments and drift from
//! the uninterrupted run. Here the moments are ordinary tensors keyed by variable name: the
//! checkpoint saves them beside the weights, and resumption is exact. The update rules follow
//! PyTorch's `torch.optim.Adam`, `AdamW` and `SGD` (dampening 0) term by term.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::{Error, Result};

/// The update rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerKind {
    /// Adam with L2 weight decay added to the gradient (PyTorch's `Adam`).
    #[default]
    Adam,
    /// Adam with decoupled weight decay (PyTorch's `AdamW`).
    Adamw,
    /// Stochastic gradient descent with (heavy-ball or Nesterov) momentum (PyTorch's `SGD`).
    Sgd,
}

/// Which parameter group a variable belongs to, each with its own learning rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Group {
    /// The network trunk (`model.backbone.*` and anything else under `model` but the head).
    Backbone,
    /// The embedding head (`model.head.*`).
    Head,
    /// Learnable loss parameters (`loss.*`, e.g. the margin loss's β).
    Loss,
}

impl Group {
    /// The group of a VarStore variable, from its name: `loss.*` the loss's, a `head` scope
    /// outside the backbone the head's (`model.head.weight`; a TorchScript backbone's own
    /// `model.backbone.head.*` stays in the backbone), everything else the backbone's.
    pub fn of(name: &str) -> Group {
        let mut parts = name.split('.');
        if name.starts_with("loss.") {
            Group::Loss
        } else if parts.clone().any(|part| part == "head") && !parts.any(|p| p == "backbone") {
            Group::Head
        } else {
            Group::Backbone
        }
    }
}

/// The hyperparameters of one group's update rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GroupSettings {
    /// Update rule.
    pub kind: OptimizerKind,
    /// Base learning rate (the schedule scales it).
    pub lr: f64,
    /// Weight decay (L2 for Adam and SGD, decoupled for AdamW).
    pub weight_decay: f64,
    /// SGD momentum.
    pub momentum: f64,
    /// Nesterov momentum for SGD.
    pub nesterov: bool,
    /// Adam's β₁ and β₂.
    pub betas: (f64, f64),
    /// Adam's ε.
    pub eps: f64,
}

#[derive(Debug)]
struct Param {
    name: String,
    var: Tensor,
    group: Group,
    /// Adam's first moment or SGD's momentum buffer.
    m: Tensor,
    /// Adam's second moment (undefined-free: zeros for SGD too, so the state has one shape).
    v: Tensor,
    /// The updates this variable has had: Adam's bias correction counts them per variable, as
    /// PyTorch does, so a variable that sat out steps (a backbone frozen for the first epochs)
    /// starts its correction afresh when it first gets a gradient.
    step: u64,
}

/// An optimiser over the trainable variables of a VarStore.
#[derive(Debug)]
pub struct Optimizer {
    params: Vec<Param>,
    groups: BTreeMap<Group, GroupSettings>,
    n_steps: u64,
}

impl Optimizer {
    /// Collects the trainable variables of `vs` (sorted by name, so the order never depends on a
    /// hash map) and assigns each to its group. `groups` must give settings for every group that
    /// has variables.
    pub fn new(vs: &tch::nn::VarStore, groups: BTreeMap<Group, GroupSettings>) -> Result<Self> {
        let mut named: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        let mut params = Vec::with_capacity(named.len());
        for (name, var) in named {
            let group = Group::of(&name);
            if !groups.contains_key(&group) {
                return Err(Error::MissingOptimizerGroup { group, name });
            }
            let m = var.f_zeros_like()?.detach();
            let v = var.f_zeros_like()?.detach();
            params.push(Param {
                name,
                var,
                group,
                m,
                v,
                step: 0,
            });
        }
        Ok(Optimizer {
            params,
            groups,
            n_steps: 0,
        })
    }

    /// Zeroes every gradient.
    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            p.var.zero_grad();
        }
    }

    /// How many steps have been taken (whether or not every variable was updated).
    pub fn n_steps(&self) -> u64 {
        self.n_steps
    }

    /// Applies one update with every group's learning rate multiplied by `lr_factor` (the
    /// schedule's value). Variables without a gradient (unused this step) are left alone, as
    /// PyTorch does.
    pub fn step(&mut self, lr_factor: f64) -> Result<()> {
        self.n_steps += 1;
        let _guard = tch::no_grad_guard();
        for p in &mut self.params {
            let grad = p.var.grad();
            if !grad.defined() {
                continue;
            }
            p.step += 1;
            let t = p.step as i32;
            let s = self.groups[&p.group];
            let lr = s.lr * lr_factor;
            match s.kind {
                OptimizerKind::Sgd => {
                    let mut g = grad.f_detach_copy()?;
                    if s.weight_decay != 0.0 {
                        g = g.f_add(&p.var.f_mul_scalar(s.weight_decay)?)?;
                    }
                    let update = if s.momentum != 0.0 {
                        // PyTorch sets buf = g on a parameter's first step; with buf
                        // starting at zero, buf = μ·buf + g gives the same.
                        let _ = p.m.f_mul_scalar_(s.momentum)?.f_add_(&g)?;
                        if s.nesterov {
                            g.f_add(&p.m.f_mul_scalar(s.momentum)?)?
                        } else {
                            p.m.shallow_clone()
                        }
                    } else {
                        g
                    };
                    let _ = p.var.f_sub_(&update.f_mul_scalar(lr)?)?;
                }
                OptimizerKind::Adam | OptimizerKind::Adamw => {
                    // PyTorch's single-tensor Adam, its moments updated in place; temporaries
                    // the size of the variable for the second moment's increment, the
                    // denominator and the update.
                    let (b1, b2) = s.betas;
                    let g = if s.weight_decay != 0.0 && s.kind == OptimizerKind::Adam {
                        grad.f_add(&p.var.f_mul_scalar(s.weight_decay)?)?
                    } else {
                        if s.weight_decay != 0.0 {
                            let _ = p.var.f_mul_scalar_(1.0 - lr * s.weight_decay)?;
                        }
                        grad
                    };
                    let _ = p.m.f_lerp_(&g, 1.0 - b1)?;
                    let _ =
                        p.v.f_mul_scalar_(b2)?
                            .f_addcmul_(&g, &g.f_mul_scalar(1.0 - b2)?)?;
                    let step_size = lr / (1.0 - b1.powi(t));
                    let bc2_sqrt = (1.0 - b2.powi(t)).sqrt();
                    let mut denom = p.v.f_sqrt()?;
                    let _ = denom.f_div_scalar_(bc2_sqrt)?.f_add_scalar_(s.eps)?;
                    let mut update = p.m.f_div(&denom)?;
                    let _ = p.var.f_sub_(&update.f_mul_scalar_(step_size)?)?;
                }
            }
        }
        Ok(())
    }

    /// The optimiser state as named tensors (`m.<var>`, `v.<var>`, and `t.<var>`, the
    /// variable's update count as a one-element int64 tensor), for a checkpoint.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::with_capacity(3 * self.params.len());
        for p in &self.params {
            out.push((format!("m.{}", p.name), p.m.shallow_clone()));
            out.push((format!("v.{}", p.name), p.v.shallow_clone()));
            out.push((
                format!("t.{}", p.name),
                Tensor::from_slice(&[p.step as i64]),
            ));
        }
        out
    }

    /// Restores the state written by [`Optimizer::state`] and the step count. A checkpoint
    /// written before update counts were kept per variable (no `t.<var>`) gives every variable
    /// the run's step count, which is what its optimiser used.
    pub fn load_state(&mut self, state: &BTreeMap<String, Tensor>, n_steps: u64) -> Result<()> {
        let _guard = tch::no_grad_guard();
        for p in &mut self.params {
            for (prefix, dst) in [("m", &mut p.m), ("v", &mut p.v)] {
                let key = format!("{prefix}.{}", p.name);
                let src = state
                    .get(&key)
                    .ok_or_else(|| Error::CheckpointMissingTensor(format!("optim.{key}")))?;
                if src.size() != dst.size() {
                    return Err(Error::CheckpointShape {
                        name: format!("optim.{key}"),
                        expected: dst.size(),
                        found: src.size(),
                    });
                }
                dst.f_copy_(src)?;
            }
            let key = format!("t.{}", p.name);
            p.step = match state.get(&key) {
                Some(t) if t.size() == [1] => {
                    // The writer stores counts from 0 up; a negative one is a corrupt file.
                    u64::try_from(t.f_int64_value(&[0])?).map_err(|_| Error::CheckpointShape {
                        name: format!("optim.{key} (a negative count)"),
                        expected: vec![1],
                        found: t.size(),
                    })?
                }
                Some(t) => {
                    return Err(Error::CheckpointShape {
                        name: format!("optim.{key}"),
                        expected: vec![1],
                        found: t.size(),
                    });
                }
                None => n_steps,
            };
        }
        self.n_steps = n_steps;
        Ok(())
    }
}
