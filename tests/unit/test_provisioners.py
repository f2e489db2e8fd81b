"""The one list of how provisioners tag nodes: what derives from it, and the README's table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from eks_ca_remediator.decisions import CLUSTER_TAG_KEYS, CLUSTER_TAG_PREFIXES, node_cluster
from eks_ca_remediator.provisioners import PROVISIONERS, NameInKey, NameTag, Provisioner

ROOT = Path(__file__).resolve().parents[2]


def readme_table() -> dict[str, list[str]]:
    """The README's node-recognition table: provisioner -> its row's cells."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Node recognition", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| ---")]
    return {cells[0]: cells[1:] for cells in ([c.strip() for c in r.strip("|").split("|")] for r in rows[1:])}


@pytest.mark.parametrize("provisioner", PROVISIONERS, ids=lambda p: p.key)
def test_the_readme_lists_each_provisioner_with_its_tags(provisioner: Provisioner):
    table = readme_table()
    assert provisioner.name in table, f"README node-recognition table lacks {provisioner.name}"
    tags, sources = table[provisioner.name]
    for tag in provisioner.names_cluster:
        assert tag.describe() in tags
    for source in provisioner.sources:
        assert source in sources


def test_the_readme_lists_nothing_else():
    assert set(readme_table()) == {p.name for p in PROVISIONERS}


@pytest.mark.parametrize("provisioner", PROVISIONERS, ids=lambda p: p.key)
def test_every_provisioner_is_recognised_and_cited(provisioner: Provisioner):
    assert provisioner.sources, "every entry says where it comes from"
    assert node_cluster(provisioner.tags_for("prod-a"), ["prod-a"]) == "prod-a"
    assert node_cluster(provisioner.tags_for("prod-a"), ["prod-b"]) is None
    for tag in provisioner.names_cluster:  # each tag alone is enough
        key, value = tag.render("prod-a")
        assert node_cluster({key: value}, ["prod-a"]) == "prod-a"


def test_recognition_derives_from_the_list():
    assert set(CLUSTER_TAG_KEYS) == {t.key for p in PROVISIONERS for t in p.names_cluster if isinstance(t, NameTag)}
    prefixes = {t.prefix for p in PROVISIONERS for t in p.names_cluster if isinstance(t, NameInKey)}
    assert set(CLUSTER_TAG_PREFIXES) == prefixes
    assert "aws:eks:cluster-name" not in CLUSTER_TAG_KEYS
    assert all(re.fullmatch(r"[a-z0-9-]+", p.key) for p in PROVISIONERS)
