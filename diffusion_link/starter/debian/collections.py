"""The Debian collections the starter takes recordings from: package, licence of its sounds, and what to leave out.

Chosen from the survey in the shared data folder (`debian_sounds/captions.tsv`, described in its README): everyday
sound events only. Left out: instrument and drum samples (hydrogen-drumkits, sonic-pi-samples, gcompris's
instruments and its CC-Sampling-Plus `drum_kit.ogg`), keyboard clicks (bucklespring-data), UI and ringtone themes
(sound-theme-freedesktop), and the packages whose provenance or licence is doubtful (hedgewars-data, lmms-common,
lincity-ng-data).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Collection:
    package: str
    licence: str
    skip: tuple[str, ...] = ()  # substrings of "file/member" left out


COLLECTIONS = (
    Collection("0ad-data", "CC-BY-SA-3.0"),
    Collection("openclonk-data", "CC-BY-3.0 (some CC0; authors.txt in Sound.ocg)"),
    Collection("ufoai-sound", "CC-BY-SA-3.0 (some GPL-2+, PD, CC-BY-3.0)"),
    Collection("minetest-data", "CC-BY-SA-3.0 (some CC-BY-3.0, CC0)"),
    Collection("minetest-mod-homedecor", "CC-BY-SA-4.0"),
    Collection("megaglest-data", "CC-BY-SA-3.0"),
    Collection("redeclipse-data", "CC-BY-SA-3.0 (ambience CC-BY-3.0)"),
    Collection("widelands-data", "GPL-2+"),
    Collection("wesnoth-1.16-data", "GPL-2+"),
    Collection("gcompris-qt-data", "GPL-3+ / CC0 / CC-BY-3.0 / Free Art", skip=("instruments.rcc", "drum_kit.ogg")),
    Collection("flightgear-data-base", "GPL-2+"),
    Collection("scorched3d-data", "GPL-2+"),
    Collection("openttd-opensfx", "CC-BY-SA-3.0 collection (per entry CC-BY, CC-BY-SA, CC0)"),
    Collection("lugaru-data", "CC-BY-SA-3.0"),
    Collection("flare-game", "CC-BY-SA-3.0+"),
    Collection("torcs-data", "GPL-2+"),
    Collection("supertuxkart-data", "GPL / CC0 / CC-BY-SA (per file)"),
    Collection("tuxfootball", "GPL-2+"),
)

BY_PACKAGE = {c.package: c for c in COLLECTIONS}


def keeps(collection: Collection, file: str, member: str) -> bool:
    where = f"{file}/{member}"
    return not any(part in where for part in collection.skip)
