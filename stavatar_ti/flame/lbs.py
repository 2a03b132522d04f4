"""Linear blend skinning with pose correctives (SMPL/FLAME).

Math: Loper et al., "SMPL" (SIGGRAPH Asia 2015), Eq. 2-4, as used by FLAME (Li et al., SIGGRAPH
Asia 2017, Sec. 3): shaped template, joint regression, pose-corrective blendshapes from (R - I)
of the non-root joints, a kinematic chain of rigid transforms, and skinning.
"""

from __future__ import annotations

import torch

from ..geometry import axis_angle_to_matrix


def rigid_transforms(rot_mats: torch.Tensor, joints: torch.Tensor, parents: list[int]):
    """World transforms of a kinematic chain.

    Args:
        rot_mats: [B,J,3,3] local joint rotations.
        joints: [B,J,3] rest joint positions.
        parents: length-J list, parents[0] = -1, parents[j] < j.
    Returns:
        posed joints [B,J,3] and relative transforms A [B,J,4,4] that map rest-pose points to
        posed points (the rest joint position is removed, as in SMPL).
    """
    B, J = joints.shape[:2]
    rel = joints.clone()
    rel[:, 1:] = joints[:, 1:] - joints[:, parents[1:]]
    local = torch.zeros(B, J, 4, 4, dtype=joints.dtype, device=joints.device)
    local[..., :3, :3] = rot_mats
    local[..., :3, 3] = rel
    local[..., 3, 3] = 1.0
    chain = [local[:, 0]]
    for j in range(1, J):
        chain.append(chain[parents[j]] @ local[:, j])
    world = torch.stack(chain, 1)
    posed_joints = world[..., :3, 3]
    # remove the rest position: A = world @ [I, -j; 0, 1]
    shift = (world[..., :3, :3] @ joints[..., None])[..., 0]
    A = world.clone()
    A[..., :3, 3] = world[..., :3, 3] - shift
    return posed_joints, A


def lbs(v_shaped: torch.Tensor, full_pose: torch.Tensor, posedirs: torch.Tensor, J_regressor: torch.Tensor,
        parents: list[int], weights: torch.Tensor):
    """Pose a shaped mesh.

    Args:
        v_shaped: [B,V,3] template + shape/expression blendshapes (+ offsets), metres.
        full_pose: [B,J*3] axis-angle per joint (radians), root first.
        posedirs: [(J-1)*9, V*3] pose-corrective basis (rows: flattened R - I of joints 1..J-1).
        J_regressor: [J,V] dense joint regressor.
        parents: kinematic tree, parents[0] = -1.
        weights: [V,J] skinning weights.
    Returns:
        vertices [B,V,3] and posed joints [B,J,3].
    """
    B, V = v_shaped.shape[:2]
    J = J_regressor.shape[0]
    joints = torch.einsum("jv,bvc->bjc", J_regressor, v_shaped)
    rot = axis_angle_to_matrix(full_pose.reshape(B, J, 3))
    eye = torch.eye(3, dtype=v_shaped.dtype, device=v_shaped.device)
    pose_feature = (rot[:, 1:] - eye).reshape(B, -1)
    v_posed = v_shaped + (pose_feature @ posedirs).reshape(B, V, 3)
    posed_joints, A = rigid_transforms(rot, joints, parents)
    T = torch.einsum("vj,bjmn->bvmn", weights, A)
    verts = (T[..., :3, :3] @ v_posed[..., None])[..., 0] + T[..., :3, 3]
    return verts, posed_joints
