"""The synthetic world's catalogue: one :class:`Item` per item of the event stream, and new ones.

Item ids, categories and the world come from :class:`~producers.sources.synthetic_world.World`
of the same :class:`SyntheticConfig`, so ``pulse produce synthetic:...`` and
``pulse produce --topic items --source synthetic:...`` with the same options and seed agree:
item ``i{k}`` of the events (whose ``context["category"]`` is ``c{j}``) is item ``i{k}`` of the
catalogue with ``category="c{j}"``. When the config plants tastes (``taste`` > 0), users whose
taste category is ``c{j}`` (:func:`user_tastes`) send that share of their visits to its items.

New items (``new_items``) get the ids after the world's (``i{n_items}``, ...), which the event
stream never uses, and categories in turn (``c0``, ``c1``, ...), for cold-start checks.

>>> items = list(synthetic_catalogue(SyntheticConfig(seed=1, n_users=10, n_items=10), new_items=2))
>>> [(i.item_id, i.category, i.available) for i in items][-3:]
[('i9', 'c0', True), ('i10', 'c0', True), ('i11', 'c1', True)]
>>> items[-1].attributes["new"], sorted(items[0].attributes)
('true', ['brand', 'new', 'price_band'])
"""

from __future__ import annotations

from collections.abc import Iterator

from producers.sources.synthetic_config import SyntheticConfig
from producers.sources.synthetic_world import World, random_stream
from schemas.events import Item

__all__ = ["PRICE_BANDS", "synthetic_catalogue", "user_tastes"]

PRICE_BANDS = ("low", "mid", "high")
#: Brands per category: a brand belongs to one category (``c3-b1``), as in a real shop.
BRANDS_PER_CATEGORY = 5
#: Random stream of the catalogue's attributes and availability (streams 0-5 are the events').
_CATALOGUE_STREAM = 6


def user_tastes(config: SyntheticConfig) -> dict[str, str]:
    """User id -> name of the user's planted taste category (meaningful when ``config.taste`` > 0).

    >>> user_tastes(SyntheticConfig(seed=1, n_users=3, n_items=10, n_categories=2))
    {'u0': 'c1', 'u1': 'c0', 'u2': 'c0'}
    """
    world = World(config)
    return {user: world.category_names[k] for user, k in zip(world.user_names, world.user_taste.tolist(), strict=True)}


def synthetic_catalogue(config: SyntheticConfig, *, new_items: int = 0, unavailable: int = 0) -> Iterator[Item]:
    """Yield the world's items (``i0`` .. ``i{n_items-1}``), then ``new_items`` new ones.

    ``unavailable`` of the world's items (a seeded choice) are marked ``available=False``.
    Every entry has ``updated_ms = config.start_time_ms`` and attributes ``price_band``,
    ``brand`` and ``new`` (``"true"`` for the new items).
    """
    if new_items < 0 or not 0 <= unavailable <= config.n_items:
        raise ValueError(f"need new_items >= 0 and 0 <= unavailable <= {config.n_items} items")
    world = World(config)
    rng = random_stream(config.seed, _CATALOGUE_STREAM)
    total = config.n_items + new_items
    bands = rng.integers(0, len(PRICE_BANDS), total).tolist()
    brands = rng.integers(0, BRANDS_PER_CATEGORY, total).tolist()
    off = set(rng.choice(config.n_items, size=unavailable, replace=False).tolist())
    categories = world.item_category.tolist() + [j % config.n_categories for j in range(new_items)]
    names = world.item_names + [f"i{k}" for k in range(config.n_items, total)]
    for k in range(total):
        category = world.category_names[categories[k]]
        yield Item(
            item_id=names[k],
            updated_ms=config.start_time_ms,
            category=category,
            available=k not in off,
            attributes={
                "price_band": PRICE_BANDS[bands[k]],
                "brand": f"{category}-b{brands[k]}",
                "new": "true" if k >= config.n_items else "false",
            },
        )
