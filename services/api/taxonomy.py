"""The topic taxonomy over REST: read it; replace it (admin) with validation.

An update is validated (the classifier's own rules: departments, blank terms, regexes that compile and
match something) and checked against the active routing rules (a topic a rule names cannot disappear),
then written to `MR_TAXONOMY_FILE` atomically; the classifier reloads the file between batches. In a
deployment where the file is read-only (a Kubernetes ConfigMap), the update answers 409 and the ConfigMap
is the place to change it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import yaml
from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel, Field

from services.api.auth import AdminDep, PrincipalDep
from services.api.deps import ActorDep, SessionDep, SettingsDep
from services.api.inputs import RequestModel
from shared.classify import Taxonomy
from shared.errors import ConfigError
from shared.routing import RuleSet
from shared.rulestore import active_rule_set

taxonomy_api = APIRouter(prefix="/v1/taxonomy", tags=["taxonomy"])


class TaxonomyBody(RequestModel):
    version: int | str = Field(
        description="Bump it: events carry the taxonomy version their labels came from."
    )
    topics: dict[str, dict[str, Any]] = Field(
        description="topic → {department, terms: [...], regexes: [...]}, as in config/taxonomy.yaml."
    )


class TaxonomyPublic(BaseModel):
    version: str
    topics: dict[str, dict[str, Any]]


def _read(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, f"the taxonomy file cannot be read: {exc}") from exc
    if not isinstance(data, dict):
        raise HTTPException(status.HTTP_409_CONFLICT, "the taxonomy file holds no mapping")
    return data


@taxonomy_api.get("", response_model=TaxonomyPublic)
async def get_taxonomy(settings: SettingsDep, principal: PrincipalDep) -> TaxonomyPublic:
    """The taxonomy in use: every topic with its department, terms and regexes."""
    data = _read(settings.taxonomy_file)
    return TaxonomyPublic(version=str(data.get("version", "1")), topics=dict(data.get("topics") or {}))


@taxonomy_api.put(
    "",
    response_model=TaxonomyPublic,
    responses={
        409: {"description": "The active routing rules name a topic it drops, or the file is read-only"},
        422: {"description": "The taxonomy does not validate; `detail` names the topic"},
    },
)
async def put_taxonomy(
    session: SessionDep, settings: SettingsDep, admin: AdminDep, actor: ActorDep, body: TaxonomyBody
) -> TaxonomyPublic:
    """Replace the taxonomy. Refused with the reason when it does not validate; the old one stays."""
    data = {"version": body.version, "topics": body.topics}
    try:
        taxonomy = Taxonomy.from_dict(data, where="taxonomy")
    except ConfigError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
    active = await active_rule_set(session)
    if active is not None:
        try:
            RuleSet.from_dict(
                active.body, known_topics=taxonomy.topics, where=f"routing rules v{active.version}"
            )
        except ConfigError as exc:
            raise HTTPException(
                status.HTTP_409_CONFLICT, f"the active routing rules would no longer validate: {exc}"
            ) from exc
    # One comment line whatever the names hold (a line break would end the comment).
    who = " ".join(actor.name.split())
    if actor.key_id is not None:
        who += f" (API key {actor.key_id} {' '.join((actor.key_name or '').split())})"
    header = f"# Written through PUT /v1/taxonomy by {who}; see config/taxonomy.yaml for the format.\n"
    text = header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=110)
    path = settings.taxonomy_file
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".taxonomy.", suffix=".yaml")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)  # atomic: the classifier never reads half a file
    except OSError as exc:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"the taxonomy file {path} cannot be written here ({exc.strerror}); change it where it is "
            "provisioned (e.g. the Helm chart's ConfigMap)",
        ) from exc
    return TaxonomyPublic(version=str(body.version), topics=body.topics)
