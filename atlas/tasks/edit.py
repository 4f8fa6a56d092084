"""The edit job: one knowledge edit (atlas.db.edits.EditSpec: the fact, the new object, the method's
parameters), found in the catalogue or computed and stored by `atlas.edit_jobs.run_edit` (as `atlas edit`
does inline). What an edit asks lives with the edits table, which keys edits on it; this adds the job."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from atlas.db.edits import EditSpec, check_edit_spec, find_edit, validate_edit_request
from atlas.tasks.base import JobContext, JobRequest, Stored

if TYPE_CHECKING:
    from sqlalchemy.orm import Session


class EditJobRequest(EditSpec, JobRequest):
    """Edit `subject`'s fact in `relation` to `new_object` in `model`, and compare circuits before and after
    (EditSpec's fields; its key includes the code version, as the stored edit's does)."""

    kind: ClassVar[str] = "edit"

    def validate(self, session: Session | None = None) -> None:
        if session is None:
            check_edit_spec(self)
        else:
            validate_edit_request(session, self)

    def stored(self, session: Session) -> Stored:
        edit_id = find_edit(session, self.model, self.key())
        return Stored({"edit_id": edit_id}, edit_id is not None, f"edit {edit_id}")

    def run(self, context: JobContext) -> None:
        """The edit found in the catalogue or computed and stored."""
        from atlas.edit_jobs import run_edit

        progress = context.progress(self.relation, 0)
        stored = run_edit(context.engine, self, progress)
        context.edit_ids.append(stored.edit_id)
        context.relation_done(self.relation, 1)
