import type { LifecycleRule } from "../../components/registry.ts";

/**
 * ECR lifecycle policy evaluation, for the selections strata's rules use (tagStatus untagged / tagged with
 * tagPatternList / any; countType sinceImagePushed or imageCountMoreThan), as the ECR user guide describes it:
 * rules apply in rulePriority order; each image is claimed by the first rule whose selection matches it and by no
 * other; an untagged rule selects images with no tag; a tagged rule with tagPatternList selects images that have,
 * for every pattern, a tag matching it (`*` matches any run of characters); sinceImagePushed expires a claimed
 * image older than countNumber days, imageCountMoreThan all but the countNumber most recently pushed.
 */
export interface StoredImage {
  digest: string;
  tags: string[];
  pushedAt: Date;
}

const DAY = 86_400_000;

function wildcard(pattern: string): RegExp {
  return new RegExp(`^${pattern.split("*").map((s) => s.replace(/[.+?^${}()|[\]\\]/g, "\\$&")).join(".*")}$`);
}

function selects(rule: LifecycleRule, image: StoredImage): boolean {
  const { tagStatus, tagPatternList } = rule.selection;
  if (tagStatus === "untagged") return image.tags.length === 0;
  if (tagStatus === "any") return true;
  if (image.tags.length === 0) return false;
  if (!tagPatternList?.length) throw new Error(`rule ${rule.rulePriority}: tagStatus tagged needs tagPatternList (or tagPrefixList, which strata does not use)`);
  return tagPatternList.every((p) => image.tags.some((t) => wildcard(p).test(t)));
}

/** The images the rules expire at `now`, each with the rule that expires it. */
export function expiredImages(rules: readonly LifecycleRule[], images: readonly StoredImage[], now: Date): Map<string, LifecycleRule> {
  const ordered = [...rules].sort((a, b) => a.rulePriority - b.rulePriority);
  const claimed = new Map<LifecycleRule, StoredImage[]>();
  for (const image of images) {
    const rule = ordered.find((r) => selects(r, image));
    if (rule) claimed.set(rule, [...(claimed.get(rule) ?? []), image]);
  }
  const expired = new Map<string, LifecycleRule>();
  for (const [rule, claimedImages] of claimed) {
    const { countType, countNumber } = rule.selection as { countType: string; countNumber: number };
    if (countType === "sinceImagePushed") {
      for (const i of claimedImages) if ((now.getTime() - i.pushedAt.getTime()) / DAY > countNumber) expired.set(i.digest, rule);
    } else if (countType === "imageCountMoreThan") {
      for (const i of [...claimedImages].sort((a, b) => b.pushedAt.getTime() - a.pushedAt.getTime()).slice(countNumber)) expired.set(i.digest, rule);
    } else throw new Error(`rule ${rule.rulePriority}: countType ${countType} is not modelled`);
  }
  return expired;
}
