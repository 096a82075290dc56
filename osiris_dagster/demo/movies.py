"""The embedded movie database: generated deterministically, for SQLite and MySQL alike.

The same rows land in a SQLite file (the default source of `assets/movies_to_csv.yaml`, so the
demo runs on a fresh machine with no server) and, on request, in a MySQL/MariaDB database (so
the very same pipeline can be pointed at MySQL by configuration only). The data is small but
deliberately awkward: NULLs in every nullable column, non-ASCII names, commas, quotes and line
breaks in text, decimals that end in .0, dates and datetimes with and without fractions.
"""

from __future__ import annotations

import os
import random
import tempfile
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    create_engine,
    insert,
)
from sqlalchemy.dialects import mysql, sqlite
from sqlalchemy.engine import URL

from osiris_dagster.project import ProjectLayout

TABLES = ("actors", "directors", "movies", "movie_actors", "reviews")

# SQLite keeps datetimes as text: store them as MySQL prints them (no forced .000000).
_DATETIME = DateTime().with_variant(
    sqlite.DATETIME(storage_format="%(year)04d-%(month)02d-%(day)02d %(hour)02d:%(minute)02d:%(second)02d"),
    "sqlite",
)
_FLAG = Boolean(create_constraint=False).with_variant(mysql.TINYINT(1), "mysql", "mariadb")

metadata = MetaData()
actors = Table(
    "actors",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("name", String(100), nullable=False),
    Column("birth_date", Date),
    Column("nationality", String(50)),
    Column("bio", Text),
)
directors = Table(
    "directors",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("name", String(100), nullable=False),
    Column("birth_date", Date),
    Column("country", String(50)),
)
movies = Table(
    "movies",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("title", String(200), nullable=False),
    Column("director_id", Integer, ForeignKey("directors.id")),
    Column("release_year", Integer),
    Column("rating", Numeric(3, 1)),
    Column("budget", BigInteger),
    Column("released", Date),
    Column("created_at", _DATETIME),
    Column("is_active", _FLAG),
    Column("tagline", Text),
)
movie_actors = Table(
    "movie_actors",
    metadata,
    Column("movie_id", Integer, ForeignKey("movies.id"), primary_key=True, autoincrement=False),
    Column("actor_id", Integer, ForeignKey("actors.id"), primary_key=True, autoincrement=False),
    Column("role", String(100)),
    Column("billing", Integer),
)
reviews = Table(
    "reviews",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("movie_id", Integer, ForeignKey("movies.id")),
    Column("reviewer", String(100)),
    Column("score", Numeric(3, 1)),
    Column("review", Text),
    Column("reviewed_at", _DATETIME),
)

_ACTORS = [
    ("Zoë Kravitz", date(1988, 12, 1), "American", 'Singer, actor; "Big Little Lies"'),
    ("Gérard Depardieu", date(1948, 12, 27), "French", "Over 250 films, incl. Cyrano de Bergerac"),
    ("Penélope Cruz", date(1974, 4, 28), "Spanish", None),
    ("Chiwetel Ejiofor", date(1977, 7, 10), "British", "Stage and screen\nOlivier Award winner"),
    ("Björk Guðmundsdóttir", date(1965, 11, 21), "Icelandic", "Musician who acted, once, memorably"),
    ("渡辺 謙", date(1959, 10, 21), "Japanese", "Ken Watanabe"),
    ("Mads Mikkelsen", None, "Danish", "Former dancer"),
    ("Lupita Nyong'o", date(1983, 3, 1), None, "Born in Mexico City, raised in Kenya"),
    ("Song Kang-ho", date(1967, 1, 17), "South Korean", "Parasite, Memories of Murder"),
    ("Tilda Swinton", date(1960, 11, 5), "British", 'Chameleon, "the" chameleon'),
    ("Javier Bardem", date(1969, 3, 1), "Spanish", None),
    ("Isabelle Huppert", date(1953, 3, 16), "French", "Most César nominations, ever"),
]
_DIRECTORS = [
    ("Bong Joon-ho", date(1969, 9, 14), "South Korea"),
    ("Agnès Varda", date(1928, 5, 30), "France"),
    ("Alfonso Cuarón", date(1961, 11, 28), "Mexico"),
    ("Céline Sciamma", date(1978, 11, 12), None),
    ("Akira Kurosawa", date(1910, 3, 23), "Japan"),
    ("Jane Campion", None, "New Zealand"),
]
_MOVIES = [
    ("Parasite", 1, 2019, "8.5", 11400000, date(2019, 5, 30), "Act like you own the place."),
    ("Memories of Murder", 1, 2003, "8.1", 2800000, date(2003, 5, 2), None),
    ("Cléo from 5 to 7", 2, 1962, "7.9", None, date(1962, 4, 11), "Two hours, in real time"),
    ("Roma", 3, 2018, "7.7", 15000000, date(2018, 12, 14), "A year in the life, 1970–71"),  # noqa: RUF001
    ("Portrait of a Lady on Fire", 4, 2019, "8.0", 4850000, date(2019, 9, 18), 'She said "turn around"'),
    ("Ran", 5, 1985, "8.2", 11000000, date(1985, 6, 1), "Lear, on horseback, in color"),
    ("The Piano", 6, 1993, None, 7000000, date(1993, 5, 19), "Silence,\nthen music"),
    ("Children of Men", 3, 2006, "7.9", 76000000, None, "No children. No future. No hope."),
    ("Mother", 1, 2009, "7.8", 5000000, date(2009, 5, 28), None),
    ("Tomboy", 4, 2011, "7.4", 1000000, date(2011, 4, 20), "Laure, or Mikaël?"),
    (
        "Seven Samurai",
        5,
        1954,
        "8.6",
        500000,
        date(1954, 4, 26),
        "The mighty warriors who became the seven national heroes",
    ),
    ("Vagabond", 2, 1985, "7.8", None, date(1985, 12, 4), "Sans toit ni loi"),
    ("Snowpiercer", None, 2013, "7.1", 40000000, date(2013, 8, 1), "The revolution starts here, at the tail"),
]
_ROLES = ["Lead", "Supporting", "Cameo", "Narrator", None, "Villain, reluctantly", 'The "Other" One']
_REVIEWERS = ["Ana", "Bjørn", "Chloé", None, "Dmitri", "Émile", "Fatima", "小林"]
_REVIEW_TEXTS = [
    "Masterful.",
    "Slow, but worth it.",
    'The ending? "Unforgettable".',
    "I laughed, I cried,\nI left early.",
    None,
    "Ten out of ten, would watch again",
    "Overrated; the book was better.",
]


def demo_rows() -> dict[str, list[dict[str, Any]]]:
    """Every row of the demo database, the same on every machine and in every run."""
    rng = random.Random(20250917)
    rows: dict[str, list[dict[str, Any]]] = {
        "actors": [
            {"id": i, "name": n, "birth_date": b, "nationality": nat, "bio": bio}
            for i, (n, b, nat, bio) in enumerate(_ACTORS, start=1)
        ],
        "directors": [
            {"id": i, "name": n, "birth_date": b, "country": c} for i, (n, b, c) in enumerate(_DIRECTORS, start=1)
        ],
        "movies": [],
        "movie_actors": [],
        "reviews": [],
    }
    for i, (title, director, year, rating, budget, released, tagline) in enumerate(_MOVIES, start=1):
        created = datetime(2024, 1, 1 + i, 8 + i % 10, (i * 7) % 60, (i * 13) % 60)
        rows["movies"].append(
            {
                "id": i,
                "title": title,
                "director_id": director,
                "release_year": year,
                "rating": Decimal(rating) if rating else None,
                "budget": budget,
                "released": released,
                "created_at": created if i % 6 else None,
                "is_active": i % 4 != 0,
                "tagline": tagline,
            }
        )
        for actor in sorted(rng.sample(range(1, len(_ACTORS) + 1), 3)):
            rows["movie_actors"].append(
                {"movie_id": i, "actor_id": actor, "role": rng.choice(_ROLES), "billing": rng.choice([1, 2, 3, None])}
            )
    for i in range(1, 41):
        rows["reviews"].append(
            {
                "id": i,
                "movie_id": rng.randint(1, len(_MOVIES)),
                "reviewer": rng.choice(_REVIEWERS),
                "score": Decimal(rng.randint(10, 100)) / 10 if i % 9 else None,
                "review": rng.choice(_REVIEW_TEXTS),
                "reviewed_at": datetime(
                    2024,
                    rng.randint(1, 12),
                    rng.randint(1, 28),
                    rng.randint(0, 23),
                    rng.randint(0, 59),
                    rng.randint(0, 59),
                ),
            }
        )
    return rows


def load_demo_data(url: URL | str) -> dict[str, int]:
    """Create the demo tables (dropping old ones) in a database and fill them; rows per table."""
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            metadata.drop_all(connection)
            metadata.create_all(connection)
            counts = {}
            rows = demo_rows()
            for table in metadata.sorted_tables:
                table_rows = rows[table.name]
                connection.execute(insert(table), table_rows)
                counts[table.name] = len(table_rows)
        return counts
    finally:
        engine.dispose()


def ensure_demo_database(project: ProjectLayout, name: str) -> Path:
    """The demo SQLite file, generated once per project (atomically: concurrent runs are safe)."""
    from osiris_dagster.connections import demo_database_path

    if name != "movies":
        raise ValueError(f"unknown demo database '{name}'")
    path = demo_database_path(project, name)
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".movies-", suffix=".sqlite")
    os.close(fd)
    try:
        load_demo_data(f"sqlite:///{temp}")
        os.replace(temp, path)
    finally:
        if os.path.exists(temp):
            os.unlink(temp)
    return path
