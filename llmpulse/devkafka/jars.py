"""The broker's jars: Maven resolves the pom's Kafka into a cache once, and every
broker of that version runs from there (no Docker, no download per start)."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

from llmpulse.devkafka._process import LOCAL as _LOCAL
from llmpulse.devkafka._process import Log, locked, quiet, tail
from llmpulse.errors import KafkaError

__all__ = ["POM", "kafka_version", "resolve_jars"]

POM = Path(__file__).with_name("pom.xml")
_MARKER = "libs.complete"
_POM_NS = "{http://maven.apache.org/POM/4.0.0}"
_MVN_TIMEOUT_S = 1800.0


def kafka_version(pom: Path = POM) -> str:
    """The Kafka version the pom asks for (its ``kafka.version`` property)."""
    try:
        root = ET.fromstring(pom.read_bytes())
    except (OSError, ET.ParseError) as e:
        raise KafkaError(_LOCAL, f"cannot read {pom}: {e}") from e
    props = {
        el.tag.removeprefix(_POM_NS): (el.text or "").strip()
        for el in root.findall(f"{_POM_NS}properties/*")
    }
    version = props.get("kafka.version", "")
    if not version:
        for dep in root.iter(f"{_POM_NS}dependency"):
            if dep.findtext(f"{_POM_NS}artifactId", "").startswith("kafka_"):
                version = dep.findtext(f"{_POM_NS}version", "").strip()
                if version.startswith("${"):
                    version = props.get(version[2:-1], "")
                break
    if not version:
        raise KafkaError(_LOCAL, f"{pom} names no Kafka version")
    return version


def resolve_jars(cache_dir: Path, *, pom: Path | None = None, log: Log | None = None) -> Path:
    """The directory of the broker's jars, downloaded by Maven on first use.

    The result is ``cache_dir/kafka-<version>/libs``. A marker holding the pom's hash
    is written only once Maven succeeded, so an interrupted download, or a changed
    pom, is resolved again.
    """
    say = log or quiet
    pom = pom or POM
    try:
        pom_bytes = pom.read_bytes()
    except OSError as e:
        raise KafkaError(_LOCAL, f"cannot read {pom}: {e}") from e
    home = cache_dir / f"kafka-{kafka_version(pom)}"
    libs = home / "libs"
    marker = home / _MARKER
    digest = hashlib.sha256(pom_bytes).hexdigest()

    def complete() -> bool:
        return libs.is_dir() and marker.is_file() and marker.read_text().strip() == digest

    if complete():
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise KafkaError(
            _LOCAL, "Maven (mvn) is not on PATH; it is needed once to download the Kafka jars"
        )
    home.mkdir(parents=True, exist_ok=True)
    with locked(home / ".lock"):
        if complete():  # another process resolved them while we waited for the lock
            return libs
        # Maven writes into a fresh directory that replaces libs only on success, so a
        # half-filled libs never gets on a classpath, and the pom is copied there
        # because the installed package may be read-only.
        work = Path(tempfile.mkdtemp(prefix="resolve.", dir=home))
        try:
            (work / "pom.xml").write_bytes(pom_bytes)
            out = work / "libs"
            cmd = [
                mvn,
                "-q",
                "-B",
                "-f",
                str(work / "pom.xml"),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={out}",
            ]
            say(f"downloading the Kafka jars with Maven into {libs}")
            try:
                proc = subprocess.run(
                    cmd,
                    cwd=work,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    timeout=_MVN_TIMEOUT_S,
                    check=False,
                )
            except subprocess.TimeoutExpired as e:
                raise KafkaError(_LOCAL, f"mvn did not finish in {_MVN_TIMEOUT_S:g} s") from e
            except OSError as e:
                raise KafkaError(_LOCAL, f"cannot run mvn: {e}") from e
            if proc.returncode != 0:
                raise KafkaError(
                    _LOCAL,
                    f"mvn failed with exit code {proc.returncode}:\n{tail(proc.stdout)}",
                )
            if not any(out.glob("kafka_*.jar")):
                raise KafkaError(
                    _LOCAL, f"mvn succeeded but copied no Kafka jar:\n{tail(proc.stdout)}"
                )
            marker.unlink(missing_ok=True)
            if libs.exists():
                shutil.rmtree(libs)
            out.rename(libs)
            marker.write_text(digest + "\n")
        finally:
            shutil.rmtree(work, ignore_errors=True)
    say(f"Kafka jars ready in {libs}")
    return libs
